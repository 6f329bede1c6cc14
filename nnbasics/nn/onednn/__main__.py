"""`python -m nnbasics.nn.onednn build [--force]`: compile the oneDNN convolution extension now
(otherwise it is compiled on first use); `python -m nnbasics.nn.onednn info`: where it is and
whether it loads."""

from __future__ import annotations

import argparse
import sys

from nnbasics.nn import onednn


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m nnbasics.nn.onednn", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("build", "info"))
    p.add_argument("--force", action="store_true", help="rebuild even if a built copy exists")
    args = p.parse_args(argv)
    try:
        if args.command == "build":
            path = onednn.build(force=args.force, verbose=True)
            print(f"built {path}")
        else:
            print(f"source {onednn.SOURCE}\nlibrary {onednn.library_path()}")
        ok = onednn.load(warn=False)
    except onednn.BuildError as e:
        print(f"oneDNN extension unavailable: {e}", file=sys.stderr)
        return 1
    print("loads and registers its FFI targets" if ok else f"does not load: {onednn.error()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
