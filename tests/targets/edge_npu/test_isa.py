"""ISA: binary and assembly round trips (hypothesis), and malformed input errors."""

from __future__ import annotations

import pytest
from edgec.targets.edge_npu import isa
from edgec.targets.edge_npu.isa import ALLOWED_DEPS, LAYOUTS, QUEUE, SIGNED, Instr, IsaError, Op
from hypothesis import given
from hypothesis import strategies as st


@st.composite
def instrs(draw):
    op = draw(st.sampled_from(list(Op)))
    fields = {}
    for name, bits in LAYOUTS[op]:
        if name in isa.ENUMS:
            fields[name] = int(draw(st.sampled_from(list(isa.ENUMS[name]))))
        elif name in SIGNED:
            fields[name] = draw(st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1))
        else:
            fields[name] = draw(st.integers(0, (1 << bits) - 1))
    allowed = sorted(ALLOWED_DEPS[QUEUE[op]])
    deps = draw(st.sets(st.sampled_from(allowed))) if allowed else set()
    return Instr(op, fields, frozenset(deps))


@given(instrs())
def test_binary_round_trip(ins):
    word = isa.encode(ins)
    assert 0 <= word < 1 << 128
    assert isa.decode(word) == ins


@given(st.lists(instrs(), max_size=20))
def test_assembly_and_bytes_round_trip(prog):
    assert isa.parse_program(isa.format_program(prog)) == prog
    assert isa.from_bytes(isa.to_bytes(prog)) == prog


def test_errors():
    with pytest.raises(IsaError, match="does not fit"):
        isa.make(Op.GEMM, m_len=1 << 14)
    with pytest.raises(IsaError, match="not allowed on the all queue"):
        isa.make(Op.SYNC, ("pop_prev",))
    with pytest.raises(IsaError, match="unknown mnemonic"):
        isa.parse_instr("JUMP x=1")
    with pytest.raises(IsaError, match="line 2: bad value"):
        isa.parse_program("END\nLOAD kind=nothing\n")
    assert isa.decode(7) == isa.make(Op.XFER)  # the 3-bit opcode's last value
    with pytest.raises(IsaError, match="unused bits"):
        isa.decode(int(Op.END) | 1 << 100)
