// Verification in the browser, with WebCrypto only (SHA-256, Ed25519): an entry's inclusion proof (RFC 9162),
// the log's signature on the checkpoint (C2SP signed note) and the witnesses' cosignatures (C2SP tlog-cosignature
// v1), against keys the viewer pinned in this browser. The same checks, in the same order, as
// `audit-schemas verify-inclusion --key … --witness … --min-witnesses k`, so both give the same verdict.
// Served with Subresource Integrity; it still runs code this server delivers: for independence, verify offline.
"use strict";

(() => {
  const DASH = "\u2014 ";
  const enc = new TextEncoder();

  class NotVerified extends Error {}
  const fail = (message) => { throw new NotVerified(message); };

  function b64(text, what) {
    if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4) fail(`${what} is not base64`);
    const raw = atob(text);
    return Uint8Array.from(raw, (c) => c.charCodeAt(0));
  }
  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  };
  const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
  const sha256 = async (data) => new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  const u32 = (bytes, at = 0) => ((bytes[at] << 24) >>> 0) + (bytes[at + 1] << 16) + (bytes[at + 2] << 8) + bytes[at + 3];

  async function ed25519Supported() {
    try {
      await crypto.subtle.importKey("raw", new Uint8Array(32), { name: "Ed25519" }, false, ["verify"]);
      return true;
    } catch (e) {
      return e && e.name === "DataError";  // the algorithm exists; an all-zero key is merely refused by some engines
    }
  }

  // A verifier key `<name>+<8 hex>+<base64(type ‖ 32-byte key)>`: type 0x01 for the log, 0x04 for a witness.
  async function parseKey(text, type) {
    const vkey = String(text).trim();
    const first = vkey.indexOf("+"), second = vkey.indexOf("+", first + 1);
    const [name, hash, key] = [vkey.slice(0, first), vkey.slice(first + 1, second), vkey.slice(second + 1)];
    if (first <= 0 || second < 0 || /\s/.test(name) || !/^[0-9a-f]{8}$/.test(hash)) {
      fail(`malformed ${type === 1 ? "log" : "witness"} key`);
    }
    const raw = b64(key, "a key");
    if (raw.length !== 33 || raw[0] !== type) {
      fail(type === 1 ? "a log key is base64(0x01 ‖ 32-byte Ed25519 key)" : `${name}: not a cosignature/v1 witness key (type 0x04)`);
    }
    const digest = await sha256(concat(enc.encode(`${name}\n`), raw));
    if (u32(digest) !== parseInt(hash, 16)) fail(`the key hash of ${name} does not match its key`);
    const publicKey = await crypto.subtle.importKey("raw", raw.slice(1), { name: "Ed25519" }, false, ["verify"]);
    return { name, hash: parseInt(hash, 16), publicKey };
  }

  function splitNote(note) {
    if (/[\x00-\x09\x0b-\x1f]/.test(note)) fail("a note has no control characters but newlines");
    const at = note.lastIndexOf("\n\n");
    if (at < 0 || !note.endsWith("\n")) fail("a note is a body, a blank line and signature lines");
    return { body: note.slice(0, at + 1), lines: note.slice(at + 2, -1).split("\n") };
  }

  function parseCheckpoint(body) {
    const lines = body.split("\n");
    if (lines.length < 4 || lines[lines.length - 1] !== "") fail("a checkpoint body has an origin, a size and a root");
    const [origin, size, root] = lines;
    if (!origin || !/^(0|[1-9][0-9]*)$/.test(size)) fail("malformed checkpoint origin or size");
    const rootHash = b64(root, "the checkpoint root");
    if (rootHash.length !== 32) fail("a checkpoint root hash has 32 bytes");
    return { origin, size: BigInt(size), root: rootHash };
  }

  // The log's signature (a pinned log key) and the pinned witnesses' cosignatures: a pinned key's line that does
  // not verify is an error; lines of keys nobody pinned are ignored.
  async function openNote(note, policy) {
    const { body, lines } = splitNote(note);
    const logKeys = await Promise.all(policy.logKeys.map((k) => parseKey(k, 1)));
    const witnesses = await Promise.all(policy.witnesses.map((k) => parseKey(k, 4)));
    if (policy.minWitnesses > witnesses.length) fail(`${policy.minWitnesses} witnesses required but only ${witnesses.length} pinned`);
    let signed = false;
    const cosigned = new Map();
    for (const line of lines) {
      if (!line.startsWith(DASH)) fail("a signature line starts with an em dash and a space");
      const rest = line.slice(DASH.length);
      const name = rest.slice(0, rest.indexOf(" "));
      const raw = b64(rest.slice(rest.indexOf(" ") + 1), "a signature");
      if (raw.length < 5) fail("a signature has a key hash and a signature");
      const hash = u32(raw);
      for (const key of logKeys) {
        if (key.name !== name || key.hash !== hash) continue;
        if (!await crypto.subtle.verify("Ed25519", key.publicKey, raw.slice(4), enc.encode(body))) {
          fail(`the signature by ${name}+${hash.toString(16).padStart(8, "0")} does not verify`);
        }
        signed = true;
      }
      for (const key of witnesses) {
        if (key.name !== name || key.hash !== hash) continue;
        if (raw.length !== 76) fail(`the cosignature by ${name} is not a timestamped Ed25519 signature`);
        const time = new DataView(raw.buffer, 4, 8).getBigUint64(0);
        const message = enc.encode(`cosignature/v1\ntime ${time}\n${body}`);
        if (!await crypto.subtle.verify("Ed25519", key.publicKey, raw.slice(12), message)) {
          fail(`the cosignature by ${name}+${hash.toString(16).padStart(8, "0")} does not verify`);
        }
        cosigned.set(name, time);
      }
    }
    if (!signed) fail("no signature by a known key");
    if (cosigned.size < policy.minWitnesses) {
      fail(`checkpoint has ${cosigned.size} valid cosignature(s) by pinned witnesses; ${policy.minWitnesses} required`);
    }
    return { checkpoint: parseCheckpoint(body), cosigners: [...cosigned.keys()].sort() };
  }

  const node = (left, right) => sha256(concat(Uint8Array.of(1), left, right));

  // RFC 9162 §2.1.3.2, with BigInt so sizes past 2^31 shift correctly.
  async function verifyPath(leaf, index, size, path, root) {
    if (!(index >= 0n && index < size)) fail(`leaf index ${index} is outside a tree of ${size}`);
    let fn = index, sn = size - 1n, r = leaf;
    for (const p of path) {
      if (sn === 0n) fail("inclusion proof is too long");
      if ((fn & 1n) === 1n || fn === sn) {
        r = await node(p, r);
        while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      } else {
        r = await node(r, p);
      }
      fn >>= 1n; sn >>= 1n;
    }
    if (sn !== 0n) fail("inclusion proof is too short");
    if (!equal(r, root)) fail("inclusion proof does not lead to the expected root");
  }

  // An inclusion proof document as GET /v1/audit/{id}/proof returns it, under the viewer's policy.
  async function verifyInclusion(proof, policy) {
    try {
      if (!(await ed25519Supported())) {
        return { ok: false, unsupported: true, detail: "this browser has no Ed25519 in WebCrypto: verify offline" };
      }
      if (!proof || typeof proof !== "object") fail("malformed proof document");
      const opened = await openNote(String(proof.checkpoint), policy);
      const { checkpoint } = opened;
      const data = b64(proof.leaf_data, "leaf_data");
      if (!Number.isInteger(proof.leaf_index) || !Number.isInteger(proof.tree_size) || !Array.isArray(proof.inclusion_proof)) {
        fail("malformed proof document");
      }
      const index = BigInt(proof.leaf_index), size = BigInt(proof.tree_size);
      const path = proof.inclusion_proof.map((p) => b64(p, "a proof hash"));
      if (size !== checkpoint.size) fail(`the proof is for a tree of ${size}, the checkpoint signs ${checkpoint.size}`);
      if (!checkpoint.origin.endsWith(`/${proof.topic}/${proof.partition}`)) {
        fail(`the checkpoint's origin '${checkpoint.origin}' is not this entry's partition`);
      }
      const topicLength = enc.encode(String(proof.topic ?? "")).length;
      if (data.length < 4 || u32(data) !== topicLength) fail("the leaf data does not start with this entry's topic");
      await verifyPath(await sha256(concat(Uint8Array.of(0), data)), index, size, path, checkpoint.root);
      const witnessed = opened.cosigners.length
        ? `, cosigned by ${opened.cosigners.length} witness${opened.cosigners.length > 1 ? "es" : ""} (${opened.cosigners.join(", ")})`
        : "";
      return { ok: true, detail: `leaf ${index} of ${checkpoint.origin} at tree size ${size}${witnessed}`,
        leaf: Number(index), size: Number(size), witnesses: opened.cosigners.length };
    } catch (e) {
      if (e instanceof NotVerified) return { ok: false, detail: e.message };
      return { ok: false, detail: `malformed proof document: ${e && e.message}` };
    }
  }

  window.AuditVerify = Object.freeze({ verifyInclusion, ed25519Supported });
})();
