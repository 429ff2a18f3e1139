"""``python -m trainer.integrations [openrlhf|verl]``: the file path(s) to give each framework."""

from __future__ import annotations

import sys

from trainer.integrations import integration_files


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    files = integration_files()
    if args:
        unknown = [a for a in args if a not in files]
        if unknown:
            print(f"unknown framework(s) {unknown}; known: {', '.join(files)}", file=sys.stderr)
            return 2
        for name in args:
            print(files[name])
        return 0
    for name, path in files.items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
