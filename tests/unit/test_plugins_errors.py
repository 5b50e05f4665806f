"""The host's hold on a plugin's error text: one line, bounded, whatever the backend received."""

from __future__ import annotations

from plugins.backends.base import MAX_ERROR_CHARS, plugin_error_text


def test_a_plain_error_passes_unchanged() -> None:
    text = "ZeroDivisionError: division by zero (line 2 in helper) in p.py"
    assert plugin_error_text(text) == text


def test_control_characters_are_escaped_so_the_text_stays_one_line() -> None:
    assert plugin_error_text("ValueError: a\nWARNING forged\r\x1b[2J\u2028") == \
        "ValueError: a\\nWARNING forged\\r\\x1b[2J\\u2028"


def test_a_flood_is_cut_to_the_limit_with_a_mark() -> None:
    out = plugin_error_text("E: " + "y" * 10_000_000)
    assert len(out) == MAX_ERROR_CHARS and out.endswith("…")
    escaped = plugin_error_text("\n" * 5000)
    assert len(escaped) == MAX_ERROR_CHARS and escaped.startswith("\\n\\n") and escaped.endswith("…")


def test_it_is_idempotent() -> None:
    once = plugin_error_text("x\n" * 2000)
    assert plugin_error_text(once) == once
