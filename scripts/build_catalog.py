"""Build config/catalog.json from a models.dev api.json snapshot (a file path or https://models.dev/api.json).

Keeps every provider whose package the gateway can speak (gateway.catalog.wire.PACKAGES) and every
field of it, so a refresh is: python scripts/build_catalog.py https://models.dev/api.json
"""

from __future__ import annotations

import argparse
import sys

import orjson

from gateway.catalog.load import read_document
from gateway.catalog.wire import PACKAGES


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", help="path or URL of a models.dev api.json")
    parser.add_argument("--out", default="config/catalog.json")
    args = parser.parse_args()
    document = read_document(args.source)
    kept = {pid: p for pid, p in sorted(document.items()) if p.get("npm") in PACKAGES}
    dropped = sorted(set(document) - set(kept))
    with open(args.out, "wb") as out:
        out.write(orjson.dumps(kept, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        out.write(b"\n")
    models = sum(len(p.get("models", {})) for p in kept.values())
    print(f"{args.out}: {len(kept)} providers, {models} models; left out (wire format not spoken): "
          f"{', '.join(dropped) or 'none'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
