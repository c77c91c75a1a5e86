"""Steps for the client suites (minio_suite.py, fsspec_suite.py, obstore_suite.py): every step
runs and prints "ok"/"FAIL"; `finish` prints "<name> suite OK" or exits non-zero naming the
failed steps. Python puts the running script's folder on sys.path, so the suites import this."""
import sys

fails = []


def step(name):
    def wrap(f):
        try:
            f()
            print("ok  ", name)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            fails.append(name)
            print("FAIL", name, type(e).__name__, str(e)[:400])
        return f

    return wrap


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def finish(name):
    if fails:
        print(f"{name} suite FAILED:", ", ".join(fails))
        sys.exit(1)
    print(f"{name} suite OK")
