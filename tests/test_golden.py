"""The numbers do not move when the code is reorganised: every golden case (tests/golden/cases.py,
one per recipe and objective family) reproduces its recorded report and final parameters bitwise
on the CPU with one thread."""
import importlib.util
import json
import os

import pytest
import torch

HERE = os.path.join(os.path.dirname(__file__), "golden")
spec = importlib.util.spec_from_file_location("golden_cases", os.path.join(HERE, "cases.py"))
cases = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cases)
GOLDEN = json.load(open(cases.GOLDEN))


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def test_every_case_has_a_recording():
    assert set(GOLDEN) == set(cases.CASES)


@pytest.mark.parametrize("name", sorted(cases.CASES))
def test_golden_run_is_reproduced_bitwise(name):
    got = cases.run_case(name)
    want = GOLDEN[name]
    assert got["report"] == want["report"]
    assert got["parameters"] == want["parameters"]
