/**
 * An HTTP proxy in front of a real Consul agent that can answer with errors
 * or stall, the way Consul's own api/lock_test.go puts an httptest proxy in
 * front of the server. Passes everything through until told otherwise.
 */

export type Fault =
  | { kind: "status"; status: number; body?: string; match?: RegExp }
  | { kind: "stall"; match?: RegExp }
  | { kind: "garbage"; match?: RegExp }
  /** Forwards the request only once `until` resolves (a slow hop, to order two writers). */
  | { kind: "hold"; until: Promise<void>; match?: RegExp };

export class FaultProxy {
  readonly server: ReturnType<typeof Bun.serve>;
  fault: Fault | undefined;
  /** Requests answered with a fault, by "METHOD path". */
  readonly injected: string[] = [];
  readonly seen: string[] = [];

  constructor(readonly upstream: string) {
    this.server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      idleTimeout: 0,
      fetch: (req) => this.#handle(req),
    });
  }

  get addr(): string {
    return `127.0.0.1:${this.server.port}`;
  }

  async #handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const what = `${req.method} ${url.pathname}`;
    this.seen.push(what);
    const f = this.fault;
    if (f && (!f.match || f.match.test(url.pathname + url.search))) {
      this.injected.push(what);
      if (f.kind === "status") return new Response(f.body ?? "injected fault", { status: f.status });
      if (f.kind === "garbage") return new Response("{not json", { status: 200, headers: { "X-Consul-Index": "1" } });
      if (f.kind === "hold") await f.until;
      else await new Promise(() => {}); // stall forever; the client's timeout must fire
    }
    const body = req.method === "GET" || req.method === "HEAD" ? undefined : await req.arrayBuffer();
    const res = await fetch(this.upstream + url.pathname + url.search, { method: req.method, headers: req.headers, ...(body ? { body } : {}) });
    // fetch has already decompressed the body: drop the headers that describe the compressed one.
    const headers = new Headers(res.headers);
    headers.delete("content-encoding");
    headers.delete("content-length");
    return new Response(await res.arrayBuffer(), { status: res.status, headers });
  }

  stop(): void {
    this.server.stop(true);
  }
}
