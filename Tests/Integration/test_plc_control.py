"""PLC stop/start and clock set: refused by default (as a protected CPU), served when the
configuration allows them (server.allow_plc_control, server.allow_clock_set)."""
import datetime

import snap7

from conftest import _wait_until
from s7helpers import connect


def test_stop_and_start_when_allowed(start_server):
    h = start_server(server_overrides={"allow_plc_control": True})
    c = connect(h)
    other = connect(h)
    try:
        assert c.get_cpu_state() == "S7CpuStatusRun"
        assert c.plc_stop() == 0
        # The mode is the CPU's, not the connection's: another client sees STOP too.
        assert other.get_cpu_state() == "S7CpuStatusStop"
        assert c.plc_stop() == 0x01300000  # "CPU : PLC already STOP"
        assert c.db_read(1, 0, 4) == bytearray(4)  # data stays readable in STOP, as on a real CPU
        assert c.plc_hot_start() == 0
        assert other.get_cpu_state() == "S7CpuStatusRun"
        assert c.plc_hot_start() == 0x00F00000  # "CPU : PLC already RUN"
        assert c.plc_stop() == 0 and c.plc_cold_start() == 0
        assert c.get_cpu_state() == "S7CpuStatusRun"
    finally:
        c.disconnect()
        other.disconnect()
    log = h.log()
    assert "PLC stop: the CPU is now in STOP" in log and "PLC start: the CPU is now in RUN" in log


def test_stop_refused_by_default(server):
    c = connect(server)
    try:
        assert c.plc_stop() != 0
        assert c.get_cpu_state() == "S7CpuStatusRun"
    finally:
        c.disconnect()
    # The line is written as the refusal is answered; the log file may lag the answer.
    _wait_until(server, 5, lambda: "server.allow_plc_control is false" in server.log(), "the refusal's log line")


def test_clock_set_when_allowed_keeps_an_offset(start_server):
    h = start_server(server_overrides={"allow_clock_set": True})
    c = connect(h)
    try:
        wanted = datetime.datetime(2031, 7, 8, 9, 10, 11)
        c.set_plc_datetime(wanted)
        got = c.get_plc_datetime()
        assert abs((got - wanted).total_seconds()) < 5
        # A new connection reads the same CPU clock; the host clock is untouched.
        c2 = connect(h)
        assert abs((c2.get_plc_datetime() - wanted).total_seconds()) < 5
        c2.disconnect()
        assert abs((datetime.datetime.now() - got).total_seconds()) > 86400
    finally:
        c.disconnect()


def test_clock_set_refused_by_default(server):
    c = connect(server)
    try:
        try:
            c.set_plc_datetime(datetime.datetime(2031, 7, 8, 9, 10, 11))
            raised = None
        except RuntimeError as e:
            raised = e
        assert raised is not None and b"protection level" in raised.args[0]
        assert abs((c.get_plc_datetime() - datetime.datetime.now()).total_seconds()) < 60
    finally:
        c.disconnect()
