"""The dependency rules of the privilege-separated runtime, read from the package manifest
(`swift package describe`): the supervisor and the PLC-client library link no network or
protocol code."""
import json
import subprocess

from conftest import REPO

NETWORK_PACKAGES = {"NIOCore", "NIOPosix", "NIOHTTP1", "NIOEmbedded", "Prometheus"}
PROTOCOL_TARGETS = {"S7Wire", "S7Session", "S7Config", "S7Server", "S7Runtime"}


def closure(name):
    """Every target and product `name` depends on, directly or through other targets."""
    described = json.loads(subprocess.run(["swift", "package", "describe", "--type", "json"], cwd=REPO,
                                          capture_output=True, text=True, check=True, timeout=120).stdout)
    targets = {t["name"]: t for t in described["targets"]}
    seen_targets, products, todo = set(), set(), [name]
    while todo:
        t = targets[todo.pop()]
        products |= set(t.get("product_dependencies", []))
        for d in t.get("target_dependencies", []):
            if d not in seen_targets:
                seen_targets.add(d)
                todo.append(d)
    return seen_targets, products


def test_the_supervisor_links_no_nio_prometheus_or_protocol_target():
    targets, products = closure("S7Supervisor")
    assert targets == {"S7IPC", "S7Sys", "PLCMemory", "CS7Sys", "CLibcap", "CSeccomp"}, targets
    assert not products & NETWORK_PACKAGES, products
    assert products <= {"SystemPackage"}, products
    assert not targets & PROTOCOL_TARGETS, targets


def test_the_plc_client_library_depends_only_on_memory_sys_and_ipc():
    targets, products = closure("PLCMemoryClient")
    assert targets <= {"PLCMemory", "S7Sys", "S7IPC", "CS7Sys", "CLibcap", "CSeccomp"}, targets
    assert products <= {"SystemPackage"}, products
    described = json.loads(subprocess.run(["swift", "package", "describe", "--type", "json"], cwd=REPO,
                                          capture_output=True, text=True, check=True, timeout=120).stdout)
    product = next(p for p in described["products"] if p["name"] == "S7commdPLCSwift")
    assert product["targets"] == ["PLCMemoryClient"], product
