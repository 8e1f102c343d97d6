"""x86 VNNI int8 dot products: ``vpdpbusd`` as a TIR tensor intrinsic.

One ``vpdpbusd`` multiplies 64 unsigned bytes by 64 signed bytes and adds each group
of four products into one of 16 int32 lanes: 64 multiply-adds per instruction,
against 16 for a float32 FMA. The description is TVM's
(``tvm.s_tir.tensor_intrin.x86``); the implementation is ours because TVM 0.27's
passes the byte operands as ``<16 x i32>``, which LLVM from version 17 on rejects
(its ``vpdpbusd.512`` takes ``<64 x i8>``): the module then fails to verify.

``C[i] += sum_k u8(A[k]) * s8(B[i, k])`` for ``i < 16, k < 4``: ``A`` is the four
activation bytes (broadcast to all lanes), ``B`` sixteen columns of four weights each,
contiguous (the weights are pre-packed as ``[N/16, K/4, 16, 4]``).
"""

from __future__ import annotations

from edgec.targets.cpu.common import Roles
from tvm import s_tir, tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.target import Target

INTRIN = "edgec_dot_16x4_vnni"
LANES, GROUP = 16, 4  # int32 lanes, bytes summed into each lane


# TVM's description (tvm.s_tir.tensor_intrin.x86), restated: importing that module
# registers every target's intrinsics, which takes over a minute.
@T.prim_func(s_tir=True)
def _dot_16x4_desc(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((16, 4), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        for i in T.serial(0, 16):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")


@T.prim_func(s_tir=True)
def _dot_16x4_vnni(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((16, 4), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
        a_bytes = T.reinterpret(T.broadcast(a_i32, 16), dtype="uint8x64")
        C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            C.vload([0], dtype="int32x16"),
            a_bytes,
            B.vload([0, 0], dtype="int8x64"),
            dtype="int32x16",
        )


TensorIntrin.register(INTRIN, _dot_16x4_desc, _dot_16x4_vnni, override=True)

# The transposed roles, for convolutions whose lanes run along output pixels:
# ``C[i] += sum_k u8(A[i, k]) * s8(B[k])``. ``A`` is sixteen pixels of four input
# channels each, contiguous (activations packed ``[C/4, H, W, 4]``); ``B`` the four
# weights of one output channel, broadcast.
INTRIN_PIXELS = "edgec_dot_16x4_vnni_pixels"


@T.prim_func(s_tir=True)
def _pixels_desc(
    A: T.Buffer((16, 4), "uint8", offset_factor=1),
    B: T.Buffer((4,), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:16, 0:4], B[0:4])
        T.writes(C[0:16])
        for i in T.serial(0, 16):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vi, vk], "int32") * T.cast(B[vk], "int32")


@T.prim_func(s_tir=True)
def _pixels_vnni(
    A: T.Buffer((16, 4), "uint8", offset_factor=1),
    B: T.Buffer((4,), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:16, 0:4], B[0:4])
        T.writes(C[0:16])
        b_i32 = T.reinterpret(B.vload([0], "int8x4"), dtype="int32")
        b_bytes = T.reinterpret(T.broadcast(b_i32, 16), dtype="int8x64")
        C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            C.vload([0], dtype="int32x16"),
            A.vload([0, 0], dtype="uint8x64"),
            b_bytes,
            dtype="int32x16",
        )


TensorIntrin.register(INTRIN_PIXELS, _pixels_desc, _pixels_vnni, override=True)


def vnni_reduction(func: tirx.PrimFunc, target: Target) -> tuple[s_tir.Schedule, Roles] | str:
    """``tiling.reduction_kernel`` of ``func`` on a VNNI target, or why not."""
    from edgec.targets.cpu.tiling import reduction_kernel

    if not has_vnni(target):
        return "target has no AVX512-VNNI"
    found = reduction_kernel(func)
    if isinstance(found, str):
        return found
    sch, roles = found
    # A producer the reduction does not read feeds the epilogue (a residual's
    # dequantize): it is computed where the epilogue reads it.
    main_reads = [r.source for r in sch.get(roles.main.block_rv).reads]
    for p in list(roles.producers):
        out = sch.get(p.block_rv).writes[0].source
        if not any(out.same_as(b) for b in main_reads):
            sch.compute_inline(p.block_rv)
            roles.producers.remove(p)
    return sch, roles


def accumulate_with_epilogue(sch: s_tir.Schedule, roles: Roles) -> s_tir.schedule.SBlockRV:
    """Accumulate the reduction in a buffer the intrinsic can address (global scope), and
    fold the epilogue chain into its write-back block, which is returned."""
    wb = sch.cache_write(roles.main.block_rv, 0, "global")
    for c in roles.consumers[:-1]:
        sch.compute_inline(c.block_rv)
    if roles.consumers:
        sch.reverse_compute_inline(roles.consumers[-1].block_rv)
    return wb


def has_vnni(target: Target) -> bool:
    """True if ``target`` is an x86 LLVM target whose CPU has AVX512-VNNI."""
    from tvm.target.codegen import llvm_version_major, target_has_features

    if target.kind.name != "llvm" or llvm_version_major() < 17:
        return False
    try:
        return bool(target_has_features("avx512vnni", target))
    except Exception:  # noqa: BLE001 - TVM raises plain errors; not an x86 CPU LLVM knows
        return False
