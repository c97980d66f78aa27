"""OpaProcess starts the OPA it says it started: a port that another server took between
free_port() and OPA's bind is never mistaken for ours (both audit OPAs of a `regate diff`
once answered from one process, and the diff found no change)."""

from __future__ import annotations

import pytest

from regate.common import opa as opa_module
from regate.common.opa import OpaProcess, PortTaken


@pytest.fixture
def other_opa(opa_bin):
    with OpaProcess([], opa_bin=opa_bin, capture_output=True) as other:
        yield other


def test_a_fixed_port_taken_by_another_opa_is_an_error(opa_bin, other_opa):
    mine = OpaProcess([], port=other_opa.port, opa_bin=opa_bin, capture_output=True)
    with pytest.raises(PortTaken, match=f"another server answers on 127.0.0.1:{other_opa.port}"):
        mine.start(wait_bundle=False)
    assert mine.proc.poll() is not None
    assert other_opa.proc.poll() is None


def test_a_chosen_port_taken_meanwhile_is_given_up_for_another(opa_bin, other_opa, monkeypatch):
    ports = iter([other_opa.port])
    real_free_port = opa_module.free_port
    monkeypatch.setattr(opa_module, "free_port", lambda: next(ports, None) or real_free_port())
    with OpaProcess([], opa_bin=opa_bin, capture_output=True) as mine:
        assert mine.port != other_opa.port
        assert mine._ready_server(f"{mine.url}/health") == mine.instance
        assert other_opa._ready_server(f"{other_opa.url}/health") == other_opa.instance


def test_a_restart_keeps_its_port(opa_bin):
    with OpaProcess([], opa_bin=opa_bin, capture_output=True) as mine:
        port = mine.port
        mine.stop()
        with OpaProcess([], port=port, opa_bin=opa_bin, capture_output=True):  # someone took it meanwhile
            with pytest.raises(PortTaken):
                mine.start(wait_bundle=False)
        assert mine.port == port


@pytest.mark.parametrize("random_hex", ["1234567890123456", "12e4567890123456", "abcdef0123456789"])
def test_any_random_instance_label_starts(opa_bin, monkeypatch, random_hex):
    # OPA refused to start (about 1 start in 2,000: (10/16)**16) when the random label was all digits.
    monkeypatch.setattr(opa_module.secrets, "token_hex", lambda n: random_hex)
    with OpaProcess([], opa_bin=opa_bin, capture_output=True) as mine:
        assert mine._ready_server(f"{mine.url}/health") == mine.instance
