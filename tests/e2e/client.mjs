// The TypeScript SDK client (@modelcontextprotocol/sdk, initialize handshake): the same command
// line and JSON lines as `clientlib.py`.
//
//   MCP_TS_SDK=DIR node client.mjs URL [-H NAME:VALUE]... ACTION...
//
// DIR holds the `node_modules` the SDK was installed into (`npm install --prefix DIR`), since
// this file lives outside it.

import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const ACTIONS = ["tools/call", "prompts/get", "resources/read"];
const ACTION_TIMEOUT_MS = 20000;

const sdk = createRequire(`${process.env.MCP_TS_SDK ?? "."}/`);
const load = (path) => import(pathToFileURL(sdk.resolve(`@modelcontextprotocol/sdk/${path}`)));
const { Client } = await load("client/index.js");
const { StreamableHTTPClientTransport, StreamableHTTPError } = await load("client/streamableHttp.js");
const { McpError } = await load("types.js");

function parseArgs(argv) {
  const [url, ...rest] = argv;
  const headers = {};
  const actions = [];
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === "-H") {
      const header = rest[++i];
      const at = header.indexOf(":");
      headers[header.slice(0, at).trim()] = header.slice(at + 1).trim();
      continue;
    }
    const at = rest[i].indexOf(":");
    const [method, target] = [rest[i].slice(0, at), rest[i].slice(at + 1)];
    if (at < 0 || !ACTIONS.includes(method) || !target) {
      console.error(`unknown action ${rest[i]}: expected one of ${ACTIONS} with :TARGET`);
      process.exit(2);
    }
    actions.push([method, target]);
  }
  return { url, headers, actions };
}

function emit(action, target, ok, fields = {}) {
  const line = {
    action,
    target,
    ok,
    error_kind: null,
    code: null,
    message: null,
    reason: null,
    text: null,
    ...fields,
  };
  console.log(JSON.stringify(line));
}

const firstText = (contents) => (contents ?? []).find((c) => typeof c?.text === "string")?.text ?? null;

async function act(url, headers, action, target) {
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
  const client = new Client({ name: "mcp-authz-e2e", version: "1.0.0" });
  const options = { timeout: ACTION_TIMEOUT_MS };
  try {
    await client.connect(transport, options);
    if (action === "tools/call") {
      const result = await client.callTool({ name: target, arguments: {} }, undefined, options);
      const text = firstText(result.content);
      if (result.isError) {
        const reason = result._meta?.["mcp-authz/reason"] ?? null;
        emit(action, target, false, { error_kind: "tool_error", message: text, reason, text });
      } else {
        emit(action, target, true, { text });
      }
    } else if (action === "prompts/get") {
      const result = await client.getPrompt({ name: target }, options);
      emit(action, target, true, { text: firstText(result.messages.map((m) => m.content)) });
    } else {
      const result = await client.readResource({ uri: target }, options);
      emit(action, target, true, { text: firstText(result.contents) });
    }
  } finally {
    await client.close();
  }
}

const { url, headers, actions } = parseArgs(process.argv.slice(2));
for (const [action, target] of actions) {
  try {
    await act(url, headers, action, target);
  } catch (error) {
    if (error instanceof McpError && error.code === -32001 && /timed out/i.test(error.message)) {
      emit(action, target, false, { error_kind: "timeout", code: error.code, message: error.message });
    } else if (error instanceof McpError) {
      const reason = typeof error.data?.reason === "string" ? error.data.reason : null;
      emit(action, target, false, { error_kind: "mcp_error", code: error.code, message: error.message, reason });
    } else {
      const code = error instanceof StreamableHTTPError ? error.code : null;
      emit(action, target, false, { error_kind: "transport", code, message: `${error.name}: ${error.message}` });
    }
  }
}
