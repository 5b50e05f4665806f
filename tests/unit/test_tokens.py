import json
import stat

import pytest

from actors.hub.tokens import TokenFileError, Tokens


def test_tokens_file_created_private_with_operator(tmp_path):
    t = Tokens(tmp_path / "tokens.json")
    mode = stat.S_IMODE((tmp_path / "tokens.json").stat().st_mode)
    assert mode == 0o600
    assert t.is_operator(t.data()["operator"]) and not t.is_operator("nope") and not t.is_operator(None)


def test_tokens_node_tokens_map_back_and_reload_from_disk(tmp_path):
    path = tmp_path / "tokens.json"
    t = Tokens(path)
    token = t.ensure_node("pi4")
    assert t.ensure_node("pi4") == token and t.node_for(token) == "pi4" and t.node_for("x") is None
    other = Tokens(path)  # e.g. `harvester` CLI adding a node while the hub runs
    new = other.ensure_node("pizero")
    assert t.node_for(new) == "pizero"


def test_tokens_bad_file_is_a_clear_error(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"nodes": {}}))
    with pytest.raises(TokenFileError, match="expected"):
        Tokens(path)
    path.write_text("{")
    with pytest.raises(TokenFileError, match="cannot read tokens"):
        Tokens(path)
