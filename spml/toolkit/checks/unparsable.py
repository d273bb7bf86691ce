"""L0-00: a named file that does not parse is reported, and the rest is still analysed."""

from __future__ import annotations

from collections.abc import Iterator

from spml.toolkit.checks._base import Check, Finding
from spml.toolkit.checks.patterns import Facts


class UnparsableFile(Check):
    """Checks that every analysed file parses as Python 3.

    ## What it does
    Reports each file that cannot be read or parsed (a syntax error, a Python 2 helper, a
    broken encoding) at the place Python names, and analyses every other file as usual.

    ## Why is this bad?
    Nothing in such a file was checked: its bugs are invisible to L0. One stale helper in a
    folder must not sink the whole run either, so it is a finding of its own, not an abort.

    ## Example
    ```python
    print "epoch", epoch   # a Python 2 helper left in the project
    ```

    ## Use instead
    ```python
    print("epoch", epoch)
    ```
    or skip the file: `--exclude legacy/` (or `exclude = ["legacy/"]` in
    `[tool.spml.validate]`).
    """

    id = "L0-00"
    name = "unparsable-file"
    severity = "warning"
    message = "file does not parse as Python 3, so none of its code was checked"
    fix = "Fix the syntax, or skip the file with --exclude (exclude = [...] in the config)"

    def run(self, facts: Facts) -> Iterator[Finding]:
        for bad in facts.project.unparsable:
            unreadable = bad.detail.startswith("cannot read")  # a dangling link, no permission
            message = (UNREADABLE if unreadable else self.message) + f" ({bad.detail})"
            yield Finding(path=bad.display, line=bad.line, col=bad.col, id=self.id,
                          message=message, severity=self.severity,
                          fix=UNREADABLE_FIX if unreadable else self.fix)


UNREADABLE = "file cannot be read, so none of its code was checked"
UNREADABLE_FIX = ("Remove or repair the link (or the permissions), or skip the file with "
                  "--exclude (exclude = [...] in the config)")
