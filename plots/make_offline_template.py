"""Write plots/offline.html: the page `dvc plots show` fills, with Vega inlined (no CDN).

    python plots/make_offline_template.py     # needs npm and the npm registry; rerun to upgrade

DVC's default page loads Vega, Vega-Lite and vega-embed from a CDN, so offline it draws
nothing. This page carries the three browser bundles inline instead; `.dvc/config` points
`plots.html_template` at it. The versions are the majors of DVC's own CDN page (Vega 5,
Vega-Lite 5, vega-embed 6; DVC's templates declare the Vega-Lite v5 schema), at their latest
releases. It also writes plots/NOTICES.txt with the license of every package in their tree.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "offline.html"
NOTICES = HERE / "NOTICES.txt"
PACKAGES = {"vega": "5.33.1", "vega-lite": "5.23.0", "vega-embed": "6.29.0"}
BUNDLES = {"vega": "build/vega.min.js", "vega-lite": "build/vega-lite.min.js",
           "vega-embed": "build/vega-embed.min.js"}
# Packages npm installs beside them that no browser bundle contains (type stubs, a build tool).
NOT_BUNDLED_PREFIXES = ("@types/", "@rollup/")
# dvc_render fills these by plain text replacement, anywhere in the page.
DVC_PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Made by plots/make_offline_template.py. No scripts placeholder here, so DVC adds no
         CDN script tags. Licenses of the inlined code: plots/NOTICES.txt in the repository. -->
BUNDLES_HERE
    <script>
        // SVG, not canvas: the marks are elements of the page (selectable, and testable).
        const embedFromBundle = vegaEmbed;
        vegaEmbed = (el, spec, opt) => embedFromBundle(el, spec, {renderer: "svg", ...opt});
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def bundle_tag(name: str, version: str, code: str) -> str:
    """One inline <script>, without the source-map comment (the map is not shipped)."""
    code = code.rstrip()
    last = code.rfind("\n//# sourceMappingURL=")
    if last != -1:
        code = code[:last]
    for text in ("</script", "<!--", *DVC_PLACEHOLDERS):
        if text in code:
            raise SystemExit(f"{name}@{version}: the bundle contains {text!r}; it cannot be "
                             "inlined as is")
    header = f"/* {name} {version}, BSD-3-Clause: see plots/NOTICES.txt */"
    return f"    <script>{header}\n{code}\n    </script>"


def notices(node_modules: Path) -> str:
    """Every package's license text, packages with the same text grouped together."""
    by_text: dict[str, list[str]] = {}
    without_file: list[str] = []
    manifests = [*node_modules.glob("*/package.json"), *node_modules.glob("@*/*/package.json")]
    for manifest in sorted(manifests):
        folder = manifest.parent
        name = folder.relative_to(node_modules).as_posix()
        if name.startswith(NOT_BUNDLED_PREFIXES):
            continue
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        label = f"{name} {meta['version']} ({meta.get('license', 'no license field')})"
        files = sorted(p for p in folder.iterdir()
                       if p.is_file() and p.name.upper().startswith(("LICENSE", "LICENCE")))
        if files:
            by_text.setdefault(files[0].read_text(encoding="utf-8").strip(), []).append(label)
        else:
            without_file.append(label)
    parts = [
        "Third-party code inlined in plots/offline.html",
        "",
        "plots/offline.html contains the browser bundles " +
        ", ".join(f"{n} {v} ({BUNDLES[n]})" for n, v in PACKAGES.items()) +
        ", made by their authors from the npm packages listed below; each license follows the",
        "packages it covers. Made by plots/make_offline_template.py.",
    ]
    for text, labels in by_text.items():
        parts += ["", "=" * 78, *labels, "-" * 78, text]
    if without_file:
        parts += ["", "=" * 78,
                  "Packages whose npm release ships no license file (license from package.json;",
                  "the Vega packages share the BSD-3-Clause text of the University of Washington",
                  "Interactive Data Lab given above):", "-" * 78, *without_file]
    return "\n".join(parts) + "\n"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        specs = [f"{n}@{v}" for n, v in PACKAGES.items()]
        subprocess.run(["npm", "install", "--prefix", tmp, "--no-audit", "--no-fund",
                        "--ignore-scripts", "--no-save", *specs], check=True)
        node_modules = Path(tmp) / "node_modules"
        tags = [bundle_tag(n, v, (node_modules / n / BUNDLES[n]).read_text(encoding="utf-8"))
                for n, v in PACKAGES.items()]
        TEMPLATE.write_text(PAGE.replace("BUNDLES_HERE", "\n".join(tags)), encoding="utf-8")
        NOTICES.write_text(notices(node_modules), encoding="utf-8")
    print(f"wrote {TEMPLATE} ({TEMPLATE.stat().st_size // 1024} KiB), {NOTICES}", file=sys.stderr)


if __name__ == "__main__":
    main()
