#!/usr/bin/env python3
"""Run a driver image under Speakeasy and print what happens, as `sc start` + `sc stop` would.

    python tests/speakeasy/run_driver.py [--provider NAME] [PATH.sys]
    python tests/speakeasy/run_driver.py --list

The driver loads (DriverEntry), registers with NMR (or through WskRegister), is attached to the
emulated WSK provider, runs the work items it queued, and unloads (DriverUnload: detach, cleanup,
or release and WskDeregister). The trace shows the driver's own log lines (DbgPrintEx), every
call between NMR (or the WskRegister layer) and the driver with its arguments and status, its
device object, work items (each on a worker thread of its own), events and waits (with the
emulated time), and the pool balance. --provider picks what the WSK side looks like (see
--list), e.g. `wsk10-only` to watch the driver settle for WSK 1.0. The image is wsk_attach.sys
(default), wsk_echo.sys or wsk_echo_wskregister.sys; what the harness expects of it (backend,
NMR module id, tags, ...) is the driver profile of its file name, or of $WSK_DRIVER_PROFILE
(tests/driver_profiles.py); --list marks the scenarios that are not for every image, and --all
runs those meant for the image. Exit status: 0 when no problem was found, 1 otherwise, 2 on a
usage or set-up error.

If Speakeasy is not importable, this runs tests/speakeasy/setup-venv.sh (which creates
target/speakeasy-venv) and re-runs itself with that environment's python.
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def ensure_speakeasy():
    try:
        import speakeasy  # noqa: F401
        return
    except ImportError:
        pass
    if os.environ.get("WSK_ATTACH_REEXEC"):
        sys.exit("run_driver.py: speakeasy still not importable after setup-venv.sh")
    print("run_driver.py: no Speakeasy in this python; using target/speakeasy-venv",
          file=sys.stderr)
    out = subprocess.run(["bash", os.path.join(HERE, "setup-venv.sh")], stdout=subprocess.PIPE,
                         text=True)
    if out.returncode != 0:
        sys.exit("run_driver.py: setup-venv.sh failed (exit %d)" % out.returncode)
    py = out.stdout.strip().splitlines()[-1]
    env = dict(os.environ, WSK_ATTACH_REEXEC="1")
    os.execve(py, [py, os.path.abspath(__file__)] + sys.argv[1:], env)


def main(argv=None):
    sys.path.insert(0, HERE)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", nargs="?", help="the .sys to run (default: $WSK_DRIVER_SYS or "
                    "target/x86_64-pc-windows-msvc/release/wsk_attach.sys)")
    ap.add_argument("--provider", "-p", "--scenario", dest="provider", default="default",
                    help="provider scenario (default: %(default)s; --list shows all)")
    ap.add_argument("--list", action="store_true", help="list the provider scenarios and exit")
    ap.add_argument("--all", action="store_true",
                    help="run every provider scenario meant for the image in turn")
    ap.add_argument("--verbose", "-v", action="store_true", help="also show Speakeasy's own log")
    args = ap.parse_args(argv)

    ensure_speakeasy()
    import harness

    if args.list:
        for name, sc in harness.SCENARIOS.items():
            only = " (%s)" % sc.applies_to() if sc.applies_to() else ""
            print("%-22s %s%s" % (name, sc.description, only))
            if sc.wsk_description:
                print("%-22s   WskRegister backend: %s" % ("", sc.wsk_description))
        return 0
    image = args.image or harness.default_image()
    if not os.path.isfile(image):
        print("run_driver.py: no driver image at %s (build it: cargo xtask sys)" % image,
              file=sys.stderr)
        return 2
    try:
        profile = harness.profile_for(image)
    except harness.UnknownDriver as e:
        print("run_driver.py: %s" % e, file=sys.stderr)
        return 2
    names = list(harness.scenarios_for(profile)) if args.all else [args.provider]
    for n in names:
        if n not in harness.SCENARIOS:
            print("run_driver.py: unknown provider scenario %r; known: %s"
                  % (n, ", ".join(harness.SCENARIOS)), file=sys.stderr)
            return 2
        if not harness.SCENARIOS[n].is_for(profile):
            print("run_driver.py: scenario %r is not for %s (%s)"
                  % (n, profile.name, harness.SCENARIOS[n].applies_to()), file=sys.stderr)
            return 2
    if args.verbose:
        import logging
        logging.basicConfig(level=logging.INFO)
    bad = 0
    for n in names:
        r = harness.run_scenario(image, n, verbose=args.verbose)
        print(harness.format_trace(r))
        bad += bool(r.violations or r.run_errors)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
