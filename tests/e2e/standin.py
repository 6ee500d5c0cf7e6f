"""A stand-in for Envoy + mcp-authz: the upstream's MCP server, except that the calls of the
denied targets are answered with a denial in the form the path names, the bodies and statuses
SPEC §3 gives. It shows what each MCP client makes of each form, without Envoy or the service.

    python standin.py --port 8080

Paths (each serves the whole MCP server):
- `/http-status/mcp`: HTTP 403, a JSON-RPC error body (code -32003, `data.reason`);
- `/jsonrpc-error/mcp`: HTTP 200, the same body;
- `/tool-error/mcp`: HTTP 200, for `tools/call` a tool result with `isError` and
  `_meta["mcp-authz/reason"]`; for prompts and resources the JSON-RPC error;
- `/plain/mcp`: HTTP 403, the plain body `{"error": reason, "message": ...}` (not JSON-RPC);
- `/header-mismatch/mcp`: HTTP 400, a JSON-RPC error with code -32020 (`rpc_header_mismatch`).
"""

import argparse
import json

import uvicorn

import upstream

FORMS = ("http-status", "jsonrpc-error", "tool-error", "plain", "header-mismatch")

DENIED = {
    ("tools/call", "delete_records"): "tool_denied",
    ("prompts/get", "admin_prompt"): "prompt_denied",
    ("resources/read", "docs://secret/keys"): "resource_denied",
}


def denial(form, call, reason):
    """(HTTP status, body) of the denial of `call` in `form`."""
    method = call["method"]
    target = call["params"].get("uri" if method == "resources/read" else "name")
    sentence = f"{method} of `{target}` is denied"
    if form == "plain":
        return 403, {"error": reason, "message": sentence}
    if form == "tool-error" and method == "tools/call":
        result = {
            "resultType": "complete",
            "content": [{"type": "text", "text": f"{sentence} ({reason})"}],
            "isError": True,
            "_meta": {"mcp-authz/reason": reason},
        }
        return 200, {"jsonrpc": "2.0", "id": call["id"], "result": result}
    code, status = -32003, 403
    if form == "header-mismatch":
        code, status, reason = -32020, 400, "rpc_header_mismatch"
    error = {"code": code, "message": sentence, "data": {"reason": reason}}
    body = {"jsonrpc": "2.0", "id": call["id"], "error": error}
    return (status if form in ("http-status", "header-mismatch") else 200), body


class Denier:
    """ASGI middleware: answers denied calls itself, hands everything else on under `/mcp`."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        form = scope["path"].split("/")[1] if scope["type"] == "http" else ""
        if form not in FORMS or scope["path"] != f"/{form}/mcp":
            await self.app(scope, receive, send)
            return
        scope = dict(scope, path="/mcp", raw_path=b"/mcp")
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        messages, body = await upstream.read_request(receive)
        call = upstream.json_rpc_call(body)
        params = call.get("params") if isinstance(call.get("params"), dict) else {}
        target = params.get("uri" if call.get("method") == "resources/read" else "name")
        reason = DENIED.get((call.get("method"), target))
        if reason is None:
            await self.app(scope, upstream.replay(messages, receive), send)
            return
        status, answer = denial(form, call, reason)
        # Compact, as mcp-authz writes it.
        data = json.dumps(answer, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(Denier(upstream.app("json")), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
