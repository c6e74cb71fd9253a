/**
 * Who may talk to the status server: the checks every request passes before
 * a route sees it, and the headers every answer carries.
 *
 * - Host: an IP address, `localhost`, the listen host or a name in
 *   CONSUL_LEADER_HTTP_ALLOWED_HOSTS; any other name is refused, so a page
 *   that rebinds its own DNS name to this address gets nothing (403).
 * - Writes (any method but GET and HEAD) need CONSUL_LEADER_HTTP_TOKEN as
 *   `Authorization: Bearer <token>`, compared in constant time; with no token
 *   configured they are off (405). A browser cannot send that header across
 *   sites without a CORS preflight, which this server never approves; on top
 *   of that, an `Origin` other than this server's (and `null`), a
 *   `Sec-Fetch-Site` other than same-origin, and the body types a cross-site
 *   form can send (text/plain, form encodings) are refused outright.
 * - With CONSUL_LEADER_HTTP_AUTH=all, reads need the token too.
 * - Every answer: a Content-Security-Policy that allows nothing but the
 *   overview's own style sheet and forbids framing, `nosniff`, no referrer.
 *
 * Guarantees: a refused request reaches no route and its answer names the
 * rule it broke, never the token. Does not limit the rate of attempts: a
 * 16-character random token is beyond guessing over HTTP, and a flood is the
 * network's to stop.
 */

import type { StatusServerSecurity } from "../config/config.ts";
import { digestsEqual, sha256 } from "../digest.ts";
import { ipVersion } from "../host-port.ts";

export interface GuardOptions extends StatusServerSecurity {
  /** The host part of CONSUL_LEADER_HTTP_ADDR; a name there is allowed in Host as well. */
  listenHost: string;
  /** The Content-Security-Policy of every answer (`overviewCsp()` from server.ts). */
  csp: string;
  /** Told about every refusal (main.ts logs them, at most one line per interval). */
  onRefused?: (r: Refusal) => void;
}

export interface Refusal {
  method: string;
  path: string;
  status: number;
  /** Which rule, as a stable word for logs and metrics. */
  rule: "host" | "cross-site" | "content-type" | "writes-off" | "no-token" | "wrong-token" | "preflight";
  reason: string;
}

const READS = new Set(["GET", "HEAD"]);
/** What an HTML form or a no-preflight fetch() may send as a body type. */
const FORM_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"];

/** Headers on every answer, refused or not. */
export function securityHeaders(csp: string): Record<string, string> {
  return {
    "Content-Security-Policy": csp,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
  };
}

/** Wraps the route handler with the checks above. */
export function guardStatus(handler: (req: Request) => Promise<Response>, o: GuardOptions): (req: Request) => Promise<Response> {
  const headers = securityHeaders(o.csp);
  // Both sides hashed to 32 bytes, so the comparison takes the same time whatever the token's length.
  const expected = o.token ? sha256(o.token) : undefined;
  const names = new Set([...o.allowedHosts, o.listenHost.toLowerCase(), "localhost"]);

  const refuse = (req: Request, url: URL, status: number, rule: Refusal["rule"], reason: string, extra?: Record<string, string>): Response => {
    o.onRefused?.({ method: req.method, path: url.pathname, status, rule, reason });
    return new Response(`refused: ${reason}\n`, { status, headers: { ...headers, "Content-Type": "text/plain; charset=utf-8", ...extra } });
  };

  return async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    const host = req.headers.get("Host");
    if (host !== null && !hostAllowed(host, names)) {
      return refuse(req, url, 403, "host", `Host "${printable(host)}" is not an address of this server; add the name to CONSUL_LEADER_HTTP_ALLOWED_HOSTS if it is`);
    }
    if (req.method === "OPTIONS") {
      return refuse(req, url, 405, "preflight", "cross-origin requests are not served (no CORS)", { Allow: "GET, HEAD, POST" });
    }
    const write = !READS.has(req.method);
    if (write) {
      const origin = req.headers.get("Origin");
      const self = `${url.protocol}//${(host ?? url.host).toLowerCase()}`;
      if (origin !== null && origin.toLowerCase() !== self) {
        return refuse(req, url, 403, "cross-site", `a cross-site request (Origin ${printable(origin)}, this server is ${self})`);
      }
      const site = req.headers.get("Sec-Fetch-Site");
      if (site !== null && site !== "same-origin" && site !== "none") {
        return refuse(req, url, 403, "cross-site", `a cross-site request (Sec-Fetch-Site: ${printable(site)})`);
      }
      const type = (req.headers.get("Content-Type") ?? "").split(";")[0]!.trim().toLowerCase();
      if (FORM_TYPES.includes(type)) {
        return refuse(req, url, 415, "content-type", `Content-Type ${type} is what a cross-site form sends; send no body, or application/json`);
      }
    }
    if (write || o.auth === "all") {
      if (!expected) {
        return refuse(req, url, 405, "writes-off", `${req.method} ${url.pathname} is off: no CONSUL_LEADER_HTTP_TOKEN is set, so this server only reads`, { Allow: "GET, HEAD" });
      }
      const given = bearer(req.headers.get("Authorization"));
      const challenge = { "WWW-Authenticate": 'Bearer realm="consul-leader"' };
      if (given === undefined) {
        return refuse(req, url, 401, "no-token", `${req.method} ${url.pathname} needs the status token: send Authorization: Bearer <CONSUL_LEADER_HTTP_TOKEN>`, challenge);
      }
      if (!digestsEqual(sha256(given), expected)) {
        return refuse(req, url, 401, "wrong-token", "the token does not match CONSUL_LEADER_HTTP_TOKEN", challenge);
      }
    }
    const res = await handler(req);
    for (const [k, v] of Object.entries(headers)) res.headers.set(k, v);
    return res;
  };
}

function bearer(header: string | null): string | undefined {
  const m = header ? /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header) : null;
  return m ? m[1] : undefined;
}

/** Host header → allowed: an IP literal (v4, or v6 in brackets), or one of `names`; a port is ignored. */
export function hostAllowed(header: string, names: ReadonlySet<string>): boolean {
  const h = header.trim().toLowerCase();
  const v6 = /^\[([0-9a-f:.]+)\](?::\d{1,5})?$/.exec(h);
  if (v6) return ipVersion(v6[1]!) === 6;
  const m = /^([^:]+)(?::\d{1,5})?$/.exec(h);
  if (!m) return false;
  const name = m[1]!.replace(/\.$/, "");
  return ipVersion(name) === 4 || names.has(name);
}

/** A header value echoed in a refusal: bounded, printable ASCII only. */
function printable(s: string): string {
  const t = s.replace(/[^\x20-\x7e]/g, "?");
  return t.length > 100 ? `${t.slice(0, 100)}...` : t;
}
