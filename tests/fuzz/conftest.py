"""The fuzz suite's one judgement: every bad or adversarial input ends in a clear error or
an honest failure status; a success must be a correct answer.

A case is ``(thunk, expect)``: ``thunk()`` builds and solves; ``expect`` is

- ``(ExcType, "regex")``: it must raise that type with a message matching the regex
  (the regex names the argument or callable);
- ``"fail"``: it must return a non-success Result with a non-empty message;
- a callable ``ok(result) -> bool``: whatever the status, a CONVERGED result must satisfy
  ``ok`` (checked against an oracle nobody here wrote), and a failure must carry a message.
"""

import re

import pytest

import neurosolve as ns


def judge(thunk, expect):
    if isinstance(expect, tuple):
        exc, pattern = expect
        with pytest.raises(exc) as info:
            thunk()
        assert re.search(pattern, str(info.value)), f"message {str(info.value)!r} !~ {pattern!r}"
        return None
    res = thunk()
    assert isinstance(res, ns.Result), type(res)
    if expect == "fail":
        assert not res.success, f"expected a failure status, got CONVERGED ({res.certificate})"
        assert res.message and len(res.message) > 20, res.message
        return res
    if res.success:
        assert expect(res), f"CONVERGED with a wrong answer: {res.certificate}"
    else:
        assert res.message and len(res.message) > 20, res.message
    return res


@pytest.fixture
def fuzz_judge():
    return judge
