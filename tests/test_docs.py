"""The documentation names metrics as the server defines them, and the README's layout
table names every package folder."""

from __future__ import annotations

import re

from tests.conftest import ROOT
from webhook.runtime import metrics

_MENTION = re.compile(r"`(webhook_[a-z_]+)(?:\{([a-z_,]*)\})?")


def _defined(*modules: object) -> dict[str, tuple[str, ...]]:
    """Metric name as scraped (counters with `_total`) -> its label names."""
    out = {}
    for value in [v for module in (modules or (metrics,)) for v in vars(module).values()]:
        if isinstance(value, (metrics.Counter, metrics.Gauge, metrics.Histogram)):
            suffix = "_total" if isinstance(value, metrics.Counter) else ""
            out[value._name + suffix] = tuple(value._labelnames)
    return out


def test_every_metric_the_docs_name_exists_with_those_labels() -> None:
    from webhook.controller import metrics as controller_metrics

    defined = _defined(metrics, controller_metrics)
    for doc in ("README.md", "docs/operations.md", "docs/serving.md"):
        for name, labels in _MENTION.findall((ROOT / doc).read_text()):
            assert name in defined, f"{doc} names {name}, which the server does not export"
            if labels:
                assert tuple(labels.split(",")) == defined[name], \
                    f"{doc}: {name}{{{labels}}}, but the server's labels are {defined[name]}"


def test_the_readme_lists_every_metric_with_its_labels() -> None:
    text = (ROOT / "docs/serving.md").read_text()
    listed = text[text.index("**Metrics.**"):text.index("**Logs.**")]
    for name, labels in _defined().items():
        shown = f"`{name}{{{','.join(labels)}}}`" if labels else f"`{name}`"
        assert shown in listed, f"docs/serving.md's metric list lacks {shown}"


def test_the_readme_layout_table_names_every_package_folder() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Layout"):]
    listed = set(re.findall(r"^\| `(webhook/[a-z_]+/)` \|", table, re.MULTILINE))
    folders = {f"webhook/{p.parent.name}/" for p in (ROOT / "webhook").glob("*/__init__.py")}
    assert folders <= listed, f"README's layout table lacks {sorted(folders - listed)}"
    # One line per folder, none for a module of a folder.
    assert not re.search(r"^\| `webhook/[a-z_/]+\.py`", table, re.MULTILINE)
