"""Who may do what over HTTP: node tokens push, the operator token controls, reads are public or not.

Tokens travel only in `Authorization: Bearer ...`; the app sets no cookies, so a page on
another site cannot make a browser send them (no CSRF to defend against)."""

from __future__ import annotations

from actors.hub.tokens import Tokens
from web.http import ApiError, bearer_token


class Auth:
    """Checks the request's bearer token against the hub's token file."""

    def __init__(self, tokens: Tokens, public_read: bool = True) -> None:
        self.tokens = tokens
        self.public_read = public_read

    def require_operator(self) -> None:
        """401 without a token, 403 with a token that is not the operator's."""
        token = bearer_token()
        if token is None:
            raise ApiError(401, "missing 'Authorization: Bearer <operator token>' header")
        if not self.tokens.is_operator(token):
            raise ApiError(403, "this token is not the operator token")

    def require_node(self) -> str:
        """The node whose token the request carries; 401/403 otherwise."""
        token = bearer_token()
        if token is None:
            raise ApiError(401, "missing 'Authorization: Bearer <node token>' header")
        sender = self.tokens.node_for(token)
        if sender is None:
            raise ApiError(403, "unknown node token")
        return sender

    def require_reader(self) -> None:
        """Reads are open when web.public_read is on; otherwise they need the operator token."""
        if not self.public_read:
            self.require_operator()

    def may_read(self) -> bool:
        """True when this request may see fleet data (without raising)."""
        return self.public_read or self.tokens.is_operator(bearer_token())

    def role(self) -> str:
        """`operator`, `node:<name>` or `anonymous` for the request's token; 403 for an unknown token."""
        token = bearer_token()
        if token is None:
            return "anonymous"
        if self.tokens.is_operator(token):
            return "operator"
        node = self.tokens.node_for(token)
        if node is None:
            raise ApiError(403, "unknown token")
        return f"node:{node}"
