// edgec deploy runner: runs an exported TVM Relax VM module on the device CPU.
//
//   runner MODULE.so --in a.npy [--in b.npy ...] --out-dir DIR [--repeat N] [--warmup W]
//
// Loads MODULE.so, creates the Relax VM (vm_load_executable, vm_initialization),
// calls `main` with the .npy inputs W times untimed and then N times timed, writes out_0.npy, out_1.npy, ... (nested
// tuples flattened in order) and prints the timing as one JSON line on stdout.
// Any failure: one line on stderr starting with "error: " and exit code 1.
//
// Only tvm_ffi headers are used: the wheel's tvm/runtime/tensor.h needs a header the
// wheel does not ship, so tensors are made with ffi::Tensor::FromNDAlloc.

#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

// A user-facing failure; main() prints it as one line.
struct RunnerError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// 64-byte aligned host memory: TVM kernels may assume the runtime's allocation alignment.
struct AlignedCPUAlloc {
  void AllocData(DLTensor* t) {
    size_t size = ffi::GetDataSize(*t);
    size_t rounded = (size + 63) / 64 * 64;
    t->data = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    if (t->data == nullptr) throw RunnerError("out of memory allocating an input tensor");
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

struct DTypeEntry {
  const char* descr;  // numpy descr without the byte-order character
  DLDataType dtype;
};

// The dtypes the runner accepts and returns (byte order is little-endian on aarch64).
const DTypeEntry kDTypes[] = {
    {"f4", {kDLFloat, 32, 1}}, {"f8", {kDLFloat, 64, 1}}, {"f2", {kDLFloat, 16, 1}},
    {"i8", {kDLInt, 64, 1}},   {"i4", {kDLInt, 32, 1}},   {"i2", {kDLInt, 16, 1}},
    {"i1", {kDLInt, 8, 1}},    {"u1", {kDLUInt, 8, 1}},   {"b1", {kDLBool, 8, 1}},
};

DLDataType DTypeFromDescr(const std::string& descr, const std::string& path) {
  if (descr.size() == 3 && (descr[0] == '<' || descr[0] == '|' || descr[0] == '=')) {
    std::string body = descr.substr(1);
    for (const auto& e : kDTypes) {
      if (body == e.descr) return e.dtype;
    }
  }
  throw RunnerError(path + ": unsupported npy dtype '" + descr + "'");
}

std::string DescrFromDType(DLDataType dt) {
  // TVM may report bool as a 1-bit unsigned int; it is stored one byte per element.
  if (dt.lanes == 1 && (dt.code == kDLBool || (dt.code == kDLUInt && dt.bits == 1))) return "|b1";
  for (const auto& e : kDTypes) {
    if (e.dtype.code == dt.code && e.dtype.bits == dt.bits && e.dtype.lanes == dt.lanes) {
      return std::string(dt.bits == 8 ? "|" : "<") + e.descr;
    }
  }
  throw RunnerError("unsupported output dtype code=" + std::to_string(dt.code) +
                    " bits=" + std::to_string(dt.bits) + " lanes=" + std::to_string(dt.lanes));
}

// Value of `key` in a npy header dict, as raw text up to the next top-level ',' or '}'.
std::string HeaderField(const std::string& header, const std::string& key,
                        const std::string& path) {
  size_t pos = header.find("'" + key + "'");
  if (pos == std::string::npos) throw RunnerError(path + ": npy header lacks '" + key + "'");
  pos = header.find(':', pos);
  if (pos == std::string::npos) throw RunnerError(path + ": bad npy header");
  ++pos;
  while (pos < header.size() && header[pos] == ' ') ++pos;
  size_t end = pos;
  int depth = 0;
  for (; end < header.size(); ++end) {
    char c = header[end];
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
  }
  if (end < header.size() && header[end] == ')') ++end;
  return header.substr(pos, end - pos);
}

std::vector<int64_t> ParseShape(const std::string& text, const std::string& path) {
  size_t open = text.find('('), close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) {
    throw RunnerError(path + ": bad npy shape " + text);
  }
  std::vector<int64_t> shape;
  std::stringstream ss(text.substr(open + 1, close - open - 1));
  std::string item;
  while (std::getline(ss, item, ',')) {
    item.erase(std::remove(item.begin(), item.end(), ' '), item.end());
    if (item.empty()) continue;  // trailing comma of a 1-tuple
    // numpy may write Python ints with an 'L' suffix (old files).
    if (item.back() == 'L') item.pop_back();
    char* end = nullptr;
    long long v = std::strtoll(item.c_str(), &end, 10);
    if (*end != '\0' || v < 0) throw RunnerError(path + ": bad npy shape " + text);
    shape.push_back(v);
  }
  return shape;
}

ffi::Tensor ReadNpy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw RunnerError("cannot open input " + path);
  char magic[8];
  if (!f.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) {
    throw RunnerError(path + ": not a .npy file");
  }
  uint8_t major = static_cast<uint8_t>(magic[6]);
  uint32_t header_len = 0;
  if (major == 1) {
    unsigned char b[2];
    if (!f.read(reinterpret_cast<char*>(b), 2)) throw RunnerError(path + ": truncated header");
    header_len = b[0] | (b[1] << 8);
  } else if (major == 2 || major == 3) {
    unsigned char b[4];
    if (!f.read(reinterpret_cast<char*>(b), 4)) throw RunnerError(path + ": truncated header");
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  } else {
    throw RunnerError(path + ": unsupported npy version " + std::to_string(major));
  }
  std::string header(header_len, '\0');
  if (!f.read(&header[0], header_len)) throw RunnerError(path + ": truncated header");

  std::string descr = HeaderField(header, "descr", path);
  descr.erase(std::remove(descr.begin(), descr.end(), '\''), descr.end());
  if (HeaderField(header, "fortran_order", path) != "False") {
    throw RunnerError(path + ": Fortran-order arrays are not supported; save a C-order array");
  }
  std::vector<int64_t> shape = ParseShape(HeaderField(header, "shape", path), path);
  DLDataType dtype = DTypeFromDescr(descr, path);

  ffi::Tensor t = ffi::Tensor::FromNDAlloc(AlignedCPUAlloc(), ffi::ShapeView(shape.data(), shape.size()), dtype,
                                           DLDevice{kDLCPU, 0});
  size_t nbytes = ffi::GetDataSize(t);
  if (nbytes > 0 && !f.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(nbytes))) {
    throw RunnerError(path + ": data shorter than its header says");
  }
  return t;
}

void WriteNpy(const std::string& path, const ffi::Tensor& t) {
  if (t.device().device_type != kDLCPU) throw RunnerError("output tensor is not on the CPU");
  if (!t.IsContiguous()) throw RunnerError("output tensor is not contiguous");
  std::string shape = "(";
  for (int64_t d : t.shape()) shape += std::to_string(d) + ", ";
  if (t.ndim() > 1) shape.resize(shape.size() - 2);  // a 1-tuple keeps its trailing comma
  if (t.ndim() == 1) shape.resize(shape.size() - 1);
  shape += ")";
  std::string header = "{'descr': '" + DescrFromDType(t.dtype()) +
                       "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad so magic + length + header + '\n' is a multiple of 64, as numpy writes it.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';

  std::ofstream f(path, std::ios::binary);
  if (!f) throw RunnerError("cannot write " + path);
  f.write("\x93NUMPY\x01\x00", 8);
  unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff),
                          static_cast<unsigned char>(header.size() >> 8)};
  f.write(reinterpret_cast<const char*>(len), 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  const char* data = static_cast<const char*>(t.data_ptr()) + t.byte_offset();
  f.write(data, static_cast<std::streamsize>(ffi::GetDataSize(t)));
  if (!f) throw RunnerError("error writing " + path);
}

// Depth-first flattening of main's result: a tensor or (nested) tuples of tensors.
void Flatten(const ffi::Any& value, std::vector<ffi::Tensor>* out) {
  if (auto t = value.as<ffi::Tensor>()) {
    out->push_back(*t);
  } else if (auto arr = value.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& item : *arr) Flatten(item, out);
  } else {
    throw RunnerError("main returned an unsupported value of type " + value.GetTypeKey());
  }
}

struct Args {
  std::string module;
  std::vector<std::string> inputs;
  std::string out_dir;
  int repeat = 1;
  int warmup = 0;
};

Args ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw RunnerError(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--in") {
      a.inputs.push_back(next());
    } else if (arg == "--out-dir") {
      a.out_dir = next();
    } else if (arg == "--repeat" || arg == "--warmup") {
      std::string v = next();
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      long least = arg == "--repeat" ? 1 : 0;
      if (v.empty() || *end != '\0' || n < least || n > 1000000) {
        throw RunnerError(arg + " must be an integer >= " + std::to_string(least));
      }
      (arg == "--repeat" ? a.repeat : a.warmup) = static_cast<int>(n);
    } else if (!arg.empty() && arg[0] == '-') {
      throw RunnerError("unknown option " + arg);
    } else if (a.module.empty()) {
      a.module = arg;
    } else {
      throw RunnerError("unexpected argument " + arg);
    }
  }
  if (a.module.empty() || a.out_dir.empty()) {
    throw RunnerError(
        "usage: runner MODULE.so --in a.npy ... --out-dir DIR [--repeat N] [--warmup W]");
  }
  return a;
}

ffi::Function RequireFunction(const ffi::Module& mod, const std::string& name) {
  ffi::Optional<ffi::Function> f = mod->GetFunction(name, /*query_imports=*/true);
  if (!f.has_value()) throw RunnerError("module has no function '" + name + "'");
  return *f;
}

int Run(int argc, char** argv) {
  Args args = ParseArgs(argc, argv);
  std::vector<ffi::Tensor> inputs;
  for (const auto& p : args.inputs) inputs.push_back(ReadNpy(p));

  // dlopen searches the library path for a bare name; a relative path must stay a path.
  std::string module_path = args.module;
  if (module_path.find('/') == std::string::npos) module_path = "./" + module_path;
  ffi::Module lib = ffi::Module::LoadFromFile(module_path);
  ffi::Module vm = RequireFunction(lib, "vm_load_executable")().cast<ffi::Module>();
  // (device type, device id, allocator type) for the device and the host; 2 = pooled.
  RequireFunction(vm, "vm_initialization")(static_cast<int>(kDLCPU), 0, 2,
                                           static_cast<int>(kDLCPU), 0, 2);
  ffi::Function main_fn = RequireFunction(vm, "main");

  std::vector<ffi::AnyView> call_args(inputs.begin(), inputs.end());
  std::vector<double> times_ms;
  ffi::Any result;
  for (int r = 0; r < args.warmup; ++r) {
    main_fn.CallPacked(call_args.data(), static_cast<int32_t>(call_args.size()), &result);
  }
  for (int r = 0; r < args.repeat; ++r) {
    auto start = std::chrono::steady_clock::now();
    main_fn.CallPacked(call_args.data(), static_cast<int32_t>(call_args.size()), &result);
    auto stop = std::chrono::steady_clock::now();
    times_ms.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
  }

  std::vector<ffi::Tensor> outputs;
  Flatten(result, &outputs);
  for (size_t i = 0; i < outputs.size(); ++i) {
    WriteNpy(args.out_dir + "/out_" + std::to_string(i) + ".npy", outputs[i]);
  }

  double sum = 0, mn = times_ms[0];
  for (double t : times_ms) {
    sum += t;
    mn = std::min(mn, t);
  }
  std::ostringstream js;
  js.precision(6);
  js << std::fixed << "{\"repeat\": " << args.repeat << ", \"warmup\": " << args.warmup
     << ", \"mean_ms\": " << sum / times_ms.size()
     << ", \"min_ms\": " << mn << ", \"runs_ms\": [";
  for (size_t i = 0; i < times_ms.size(); ++i) js << (i ? ", " : "") << times_ms[i];
  js << "], \"num_outputs\": " << outputs.size() << "}";
  std::cout << js.str() << std::endl;
  return 0;
}

// Errors from TVM carry multi-line messages and backtraces; keep one line.
std::string OneLine(std::string s) {
  size_t nl = s.find('\n');
  if (nl != std::string::npos) s.resize(nl);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const ffi::Error& e) {
    std::cerr << "error: " << e.kind() << ": " << OneLine(e.message()) << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "error: " << OneLine(e.what()) << std::endl;
  }
  return 1;
}
