#!/usr/bin/env python3
"""Count the instructions a driver image executes inside itself, from DriverEntry to the end of
DriverUnload, under Speakeasy (issue 12, "Performance 1": the Rust seed driver against its C
baseline).

    python tests/speakeasy/count_instructions.py [--profile wsk_attach] [--map FILE.map]
        [--scenario default --scenario fallback] [--echo-bulk BYTES ...] [--top 12]
        [--json | --tsv] IMAGE.sys

`--echo-bulk BYTES` runs an echo driver's image (Rust or C) through the `echo` scenario in bulk
mode (Parameters\Bytes = BYTES, a 64-byte Message: 64 KiB chunks) and also reports the driver's
socket calls (WskSend, WskReceive, ...); two runs of different sizes give the cost of one 64 KiB
round trip by difference (`cargo xtask baseline`). A bulk run without its `echo ok, BYTES bytes`
line fails.

A code hook over the image's address range (base .. base + SizeOfImage) counts every instruction
executed there — DriverEntry, DriverUnload, and every callback NMR or the I/O manager makes into
the image in between (ClientAttachProvider, ClientDetachProvider, ClientCleanupBindingContext,
work items, completion routines) — while the harness (harness.Harness, unchanged) plays NMR and
the provider and checks its rules. Code outside the image (the kernel and NETIO functions, which
are hooks of the harness) is not counted. The count is deterministic: same image, same scenario,
same figure. With a linker map (lld-link's /MAP, or GNU ld's -Map with -ffunction-sections), the
count is also split per function (the nearest symbol at or below each address).

The run fails (exit status 1) when the harness reports a rule violation or an emulation error,
when DriverEntry does not return STATUS_SUCCESS, when DriverUnload does not complete, or when the
count is zero (a broken hook must not pass as a very fast driver). Exit status 2: usage errors.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402


class CountingHarness(harness.Harness):
    """The harness, with a code hook over the image counting instructions per address while the
    driver's lifecycle runs: from the start of the DriverEntry run to the end of the DriverUnload
    run."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.by_address: collections.Counter = collections.Counter()
        self.counting = False

    def _build(self):
        super()._build()
        base, size = self.module.get_base(), self.module.get_image_size()
        by_address = self.by_address

        def on_code(emu, address, size_, ctx):
            if self.counting:
                by_address[address] += 1

        self.code_hook = self.emu.add_code_hook(on_code, begin=base, end=base + size - 1)

    def _run_started(self, run):
        super()._run_started(run)
        if self._run_name(run) == "DriverEntry":
            self.counting = True

    def _run_completed(self, run):
        super()._run_completed(run)
        if run is not None and self._run_name(run) == "DriverUnload":
            self.counting = False


def read_symbols(map_path: str) -> List[Tuple[int, str]]:
    """(RVA, name) of the code symbols of a linker map, sorted: lld-link's /MAP (`0001:... name
    Rva+Base`, with its preferred load address) or GNU ld's -Map (`.text$name 0xVMA 0xsize`, with
    `__image_base__`)."""
    text = open(map_path, encoding="utf-8", errors="replace").read()
    symbols: Dict[int, str] = {}
    lld_base = re.search(r"Preferred load address is ([0-9a-fA-F]+)", text)
    if lld_base:
        base = int(lld_base.group(1), 16)
        for m in re.finditer(r"^\s*0001:[0-9a-fA-F]{8}\s+(\S+)\s+([0-9a-fA-F]{16})\s", text, re.M):
            name, va = m.group(1), int(m.group(2), 16)
            if name.startswith(".weak."):
                continue
            symbols.setdefault(va - base, name)
        return sorted(symbols.items())
    gnu_base = re.search(r"0x([0-9a-fA-F]+)\s+__image_base__", text)
    if not gnu_base:
        raise SystemExit("count_instructions.py: %s: not a linker map I know" % map_path)
    base = int(gnu_base.group(1), 16)
    # `.text$name` (mingw-w64) or `.text.name`, then, on the same line or the next (long
    # names), the VMA and the size.
    for m in re.finditer(r"^ \.text[.$](\S+)\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)", text, re.M):
        if int(m.group(3), 16):
            symbols.setdefault(int(m.group(2), 16) - base, m.group(1))
    return sorted(symbols.items())


def demangle(names: List[str]) -> Dict[str, str]:
    """Readable names (Rust v0 through c++filt when there is one), crate hashes dropped."""
    tool = shutil.which("c++filt") or shutil.which("x86_64-w64-mingw32-c++filt")
    out = names
    if tool and names:
        try:
            res = subprocess.run([tool], input="\n".join(names) + "\n", capture_output=True,
                                 text=True, check=True)
            lines = res.stdout.splitlines()
            if len(lines) == len(names):
                out = lines
        except (OSError, subprocess.CalledProcessError):
            pass
    return {n: re.sub(r"\[[0-9a-f]{16}\]", "", d) for n, d in zip(names, out)}


def per_function(by_rva: Dict[int, int], symbols: List[Tuple[int, str]]) -> Dict[str, int]:
    rvas = [rva for rva, _ in symbols]
    import bisect
    out: collections.Counter = collections.Counter()
    for rva, n in by_rva.items():
        i = bisect.bisect_right(rvas, rva) - 1
        out[symbols[i][1] if i >= 0 else "(before the first symbol)"] += n
    return dict(out)


# The echo drivers' bulk mode (`--echo-bulk N`): the `echo` scenario with Parameters\Bytes = N
# and a Message of BULK_MESSAGE_LEN bytes, so that a chunk is exactly 64 KiB
# (examples/wsk-echo/src/stream.rs: chunk_len = CHUNK / len * len).
BULK_MESSAGE_LEN = 64
BULK_PREFIX = "echo-bulk:"


def bulk_scenario(total: int, message: str) -> harness.Scenario:
    """The `echo` scenario (127.0.0.1:7, an echoing peer) in bulk mode: `total` bytes of
    `message` repeated."""
    registry = harness.echo_parameters(message=message)
    registry["Parameters"]["Bytes"] = harness.reg_dword(total)
    return dataclasses.replace(harness.SCENARIOS["echo"], name="%s%d" % (BULK_PREFIX, total),
                               registry=registry)


def scenario_named(name: str, message: str) -> harness.Scenario:
    if name.startswith(BULK_PREFIX):
        return bulk_scenario(int(name[len(BULK_PREFIX):]), message)
    return dataclasses.replace(harness.SCENARIOS[name])


def count(image: str, scenario: str, profile: harness.DriverProfile,
          map_path: Optional[str] = None, message: str = "m" * BULK_MESSAGE_LEN) -> dict:
    """Runs `image` through `scenario` (a named one, or `echo-bulk:N`) with the counting hook;
    returns the figures and what the harness found."""
    sc = scenario_named(scenario, message)
    h = CountingHarness(image, sc, profile=profile)
    r = h.run()
    base = r.image_base
    by_rva = {addr - base: n for addr, n in h.by_address.items()}
    total = sum(by_rva.values())
    problems = list(r.violations)
    problems += ["emulation error: %s" % e for e in r.run_errors]
    if r.entry_status != harness.STATUS_SUCCESS:
        problems.append("DriverEntry returned %s" % harness.status_name(r.entry_status))
    if not r.unload_completed:
        problems.append("DriverUnload did not complete")
    if total == 0:
        problems.append("no instruction counted inside the image (is the code hook working?)")
    if scenario.startswith(BULK_PREFIX) and not any(
            ("echo ok, %s bytes" % scenario[len(BULK_PREFIX):]) in line for line in r.logs):
        problems.append("no `echo ok, %s bytes` log line: the bulk echo did not complete"
                        % scenario[len(BULK_PREFIX):])
    calls = collections.Counter(e.name for e in r.socket_calls)
    result = {
        "image": image,
        "scenario": scenario,
        "instructions": total,
        "socket_calls": dict(sorted(calls.items())),
        "attach_tries": ["%s:%s" % (harness.version_name(t.version), harness.status_name(t.status))
                         for t in r.attach_tries],
        "nmr_calls": [e.name for e in r.nmr_calls],
        "problems": problems,
    }
    if map_path:
        symbols = read_symbols(map_path)
        funcs = per_function(by_rva, symbols)
        names = demangle(list(funcs))
        result["by_function"] = sorted(((names[k], v) for k, v in funcs.items()),
                                       key=lambda kv: (-kv[1], kv[0]))
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image")
    ap.add_argument("--profile", default=None,
                    help="driver profile (default: $WSK_DRIVER_PROFILE or the image's file name)")
    ap.add_argument("--map", default=None, help="the image's linker map, for per-function counts")
    ap.add_argument("--scenario", action="append", default=None,
                    help="provider scenario (repeatable; default: default and fallback)")
    ap.add_argument("--echo-bulk", action="append", type=int, default=[], metavar="BYTES",
                    help="the echo scenario in bulk mode, Parameters\\Bytes = BYTES and a "
                         "%d-byte Message: 64 KiB chunks (repeatable; an echo driver's image)"
                         % BULK_MESSAGE_LEN)
    ap.add_argument("--top", type=int, default=12, help="functions shown per run (text output)")
    ap.add_argument("--json", action="store_true", help="one JSON object per run, one a line")
    ap.add_argument("--tsv", action="store_true",
                    help="tab-separated lines for tools (cargo xtask baseline): `instructions "
                         "SCENARIO N`, `calls SCENARIO N NAME`, `function SCENARIO N NAME`, "
                         "`problem SCENARIO TEXT`")
    args = ap.parse_args(argv)
    if not os.path.isfile(args.image):
        print("count_instructions.py: no image at %s" % args.image, file=sys.stderr)
        return 2
    if args.profile:
        os.environ["WSK_DRIVER_PROFILE"] = args.profile
    try:
        profile = harness.profile_for(args.image)
    except harness.UnknownDriver as e:
        print("count_instructions.py: %s" % e, file=sys.stderr)
        return 2
    scenarios = list(args.scenario or [])
    scenarios += ["%s%d" % (BULK_PREFIX, n) for n in args.echo_bulk]
    scenarios = scenarios or ["default", "fallback"]
    for s in scenarios:
        if s not in harness.SCENARIOS and not s.startswith(BULK_PREFIX):
            print("count_instructions.py: unknown scenario %r" % s, file=sys.stderr)
            return 2
    bad = False
    for s in scenarios:
        res = count(args.image, s, profile, args.map)
        bad |= bool(res["problems"])
        if args.json:
            print(json.dumps(res), flush=True)
            continue
        if args.tsv:
            print("instructions\t%s\t%d" % (s, res["instructions"]))
            for name, n in res["socket_calls"].items():
                print("calls\t%s\t%d\t%s" % (s, n, name))
            for name, n in res.get("by_function", []):
                print("function\t%s\t%d\t%s" % (s, n, name))
            for p in res["problems"]:
                print("problem\t%s\t%s" % (s, " ".join(str(p).split())))
            sys.stdout.flush()
            continue
        print("%s, scenario %s: %d instructions in the image" % (args.image, s,
                                                                 res["instructions"]))
        print("  attach tries: %s" % ", ".join(res["attach_tries"]))
        print("  socket calls: %s" % ", ".join("%s %d" % kv for kv in res["socket_calls"].items()))
        for name, n in res.get("by_function", [])[:args.top]:
            print("  %8d  %s" % (n, name))
        for p in res["problems"]:
            print("  PROBLEM: %s" % p)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
