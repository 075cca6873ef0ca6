"""Chromium compiles an input's `pattern` with the `v` flag: the pod-id rule must compile
there and agree with the server (issue #17 item 5)."""

import html

import pytest

from apps.pods.forms import POD_ID_PATTERN

pytestmark = pytest.mark.e2e

CASES = {"abc-1_x": True, "x" * 64: True, "x" * 65: False, "sweep": False, "sweeps": True, "a b": False}


def test_chromium_accepts_the_pattern_and_applies_the_same_rule(page):
    console = []
    page.on("console", lambda message: console.append(message.text))
    page.set_content(f'<input id="pod" pattern="{html.escape(POD_ID_PATTERN)}">')
    for value, valid in CASES.items():
        page.fill("#pod", value)
        assert page.eval_on_selector("#pod", "el => el.checkValidity()") is valid, value
    assert not [text for text in console if "pattern" in text or "Invalid regular expression" in text]
