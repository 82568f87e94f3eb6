"""nmap's s7-info NSE script against s7commd.

s7-info's portrule only matches port 102 / service iso-tsap, so on a test
port the script is forced with the '+' prefix: `--script +s7-info`.
The script reads SZL 0x0011 (Module, Basic Hardware = order code of records
1 and 2, Version = bytes 25..27 of record 3) and SZL 0x001C (records 1..5
at fixed 34-byte offsets: System Name, Module Type (= index 2, module
name), Plant Identification, Copyright, Serial Number).
"""
import re
import shutil
import subprocess

import pytest

from conftest import PLC_IDENTITY

NMAP_TIMEOUT_S = 120


def run_s7_info(host, port):
    nmap = shutil.which("nmap")
    if nmap is None:
        pytest.fail("nmap is not installed (apt-get install -y nmap)", pytrace=False)
    proc = subprocess.run(
        [nmap, "-n", "-Pn", "-sT", "-p", str(port), "--script", "+s7-info", host],
        capture_output=True,
        text=True,
        timeout=NMAP_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"nmap failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def parse_script_output(out):
    fields = {}
    in_script = False
    for line in out.splitlines():
        if line.startswith("| s7-info:"):
            in_script = True
            continue
        if in_script:
            m = re.match(r"^\|[_ ]\s+([^:]+): ?(.*)$", line)
            if m:
                fields[m.group(1).strip()] = m.group(2).strip()
            if line.startswith("|_") or not line.startswith("|"):
                in_script = False
    return fields


def test_nmap_s7_info(server):
    out = run_s7_info(server.host, server.port)
    fields = parse_script_output(out)
    assert fields, f"no s7-info output from nmap:\n{out}\nserver log:\n{server.log()[-4000:]}"
    fw = PLC_IDENTITY["firmware_version"].lstrip("V")
    expected = {
        "Module": PLC_IDENTITY["order_code"],
        "Basic Hardware": PLC_IDENTITY["order_code"],
        "Version": fw,
        "System Name": PLC_IDENTITY["name"],
        "Module Type": PLC_IDENTITY["module_name"],
        "Serial Number": PLC_IDENTITY["serial_number"],
        "Plant Identification": PLC_IDENTITY["plant_identification"],
        "Copyright": PLC_IDENTITY["copyright"],
    }
    for key, value in expected.items():
        assert fields.get(key) == value, f"{key}: {fields.get(key)!r} != {value!r}\nnmap output:\n{out}"
    assert re.search(rf"^{server.port}/tcp\s+open\b", out, re.M), out
    server.assert_alive()


def test_nmap_twice_then_client(server):
    """Two scans in a row (each opens, probes and drops its connection) leave
    the server serving snap7 clients."""
    from s7helpers import connect

    for _ in range(2):
        fields = parse_script_output(run_s7_info(server.host, server.port))
        assert fields.get("System Name") == PLC_IDENTITY["name"]
    c = connect(server)
    try:
        c.db_write(1, 0, bytearray(b"ok"))
        assert c.db_read(1, 0, 2) == bytearray(b"ok")
    finally:
        c.disconnect()
        c.destroy()
    server.assert_alive()
