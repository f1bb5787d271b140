"""Write openapi.yaml from the app (`python scripts/gen_openapi.py`; `--check` fails on drift)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "openapi.yaml"


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:  # plain YAML, no &id001 anchors
        return True


def dump(doc: object) -> str:
    return yaml.dump(doc, Dumper=_NoAliases, sort_keys=False, allow_unicode=True, width=100)


def render() -> str:
    from cds.app import create_app
    from cds.settings import Settings

    # fixed settings: the document must not depend on the environment it is generated in
    app = create_app(Settings(_env_file=None, auth="off", demo=False, natalizumab_level_codes=[]))
    return dump(app.openapi())


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print("openapi.yaml is out of date: run python scripts/gen_openapi.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
