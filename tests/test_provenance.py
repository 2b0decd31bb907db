"""results.json -> code: which code made a run (the results tables print the commits their runs came from)."""

import re
import subprocess

from compress_sweeps.run import provenance


def test_a_checkout_names_its_commit():
    code = provenance.code_version()
    assert code["version"]
    assert re.fullmatch(r"[0-9a-f]{40}", code["commit"])
    assert isinstance(code["dirty"], bool)


def test_without_git_the_commit_is_unknown_not_an_error(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    code = provenance.code_version()
    assert code["commit"] is None and code["dirty"] is None
    assert code["version"]
