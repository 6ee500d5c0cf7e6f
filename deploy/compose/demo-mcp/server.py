"""A tiny MCP server for the demo: answers JSON-RPC over HTTP POST and echoes what reached it.

It prints the x-would-deny headers it receives, so the effect of monitor mode is visible in
`docker compose logs demo-mcp`.
"""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOOLS = ["search", "summarize", "create_ticket", "delete_ticket"]
PROMPTS = ["triage_summary", "escalation_letter"]
RESOURCES = ["tickets://handbook", "tickets://open/1042", "tickets://open/vip/7"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        try:
            message = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            message = {}
        marks = {k: v for k, v in self.headers.items() if k.lower().startswith("x-would-deny")}
        print(f"{self.path} {message.get('method')} {json.dumps(marks)}", flush=True)
        method = message.get("method")
        params = message.get("params") or {}
        if method == "initialize":
            result = {"protocolVersion": "2025-06-18",
                      "capabilities": {"tools": {}, "prompts": {}, "resources": {}},
                      "serverInfo": {"name": "demo-mcp", "version": "1.0"}}
        elif method == "tools/list":
            result = {"tools": [{"name": t, "inputSchema": {"type": "object"}} for t in TOOLS]}
        elif method == "tools/call":
            name = (message.get("params") or {}).get("name")
            result = {"content": [{"type": "text", "text": f"{name} ran"}],
                      "wouldDeny": marks.get("x-would-deny-reason") or marks.get("X-Would-Deny-Reason")}
        elif method == "prompts/list":
            result = {"prompts": [{"name": p} for p in PROMPTS]}
        elif method == "prompts/get":
            result = {"messages": [{"role": "user", "content": {
                "type": "text", "text": f"{params.get('name')} prompt"}}]}
        elif method == "resources/list":
            result = {"resources": [{"uri": u, "name": u} for u in RESOURCES]}
        elif method == "resources/read":
            result = {"contents": [{"uri": params.get("uri"), "text": "contents"}]}
        else:
            result = {}
        self.reply(200, {"jsonrpc": "2.0", "id": message.get("id"), "result": result})

    def do_GET(self):
        self.reply(200, {"server": "demo-mcp"})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8080"))
    ThreadingHTTPServer((os.environ.get("HOST", "0.0.0.0"), port), Handler).serve_forever()
