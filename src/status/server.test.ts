import { describe, expect, test } from "bun:test";
import { type Env, loadConfig } from "../config/config.ts";
import type { ElectorState, RedisView } from "../election/types.ts";
import type { MemberEntry } from "../consul/members.ts";
import { createStatusHandler, livenessMaxAgeMs, parseBytes, type StatusOptions, type StatusSource, stateDocument } from "./server.ts";

// ---- Fixtures: a group of three, seen from one node.

const SESSION = "sess-self";

function redis(over: Partial<RedisView & { error: string }> = {}): RedisView & { error?: string } {
  return {
    up: true, role: "replica", loading: false, syncing: false, linkUp: true, masterAddr: "10.0.0.1:6379",
    offset: 5000, replid: "r1", replid2: "", runId: "run1", writable: false, stale: false, ...over,
  };
}

/** A follower of node-1 (10.0.0.1:6379), in sync. */
function follower(over: Partial<ElectorState> = {}): ElectorState {
  return {
    role: "follower",
    instance: "node-2",
    service: "redis-node-2",
    session: SESSION,
    lock: { holder: "sess-leader", instance: "node-1", address: "10.0.0.1:6379", epoch: 42, modifyIndex: 50 },
    epoch: null,
    fenceInMs: null,
    decision: { kind: "follow", reason: "node-1 holds the lock", ageMs: 1200 },
    redis: redis(),
    consul: { ok: true, error: null },
    transitions: 2,
    lastRenewMs: 2,
    announce: "10.0.0.2:6379",
    loopAgeMs: 800,
    fenceAt: null,
    recent: [
      { time: "2025-01-01T00:00:00.000Z", kind: "wait", reason: "the lock is free; waiting for a better candidate" },
      { time: "2025-01-01T00:00:01.000Z", kind: "follow", reason: "node-1 holds the lock" },
    ],
    lagBytes: 100,
    maintenance: false,
    waiting: null,
    switchoverPending: false,
    incarnation: "inc-2",
    fenced: null,
    leaseFailingSince: null,
    paused: null,
    ...over,
  };
}

/** node-2 leading with a writable Redis. */
function leader(over: Partial<ElectorState> = {}): ElectorState {
  return follower({
    role: "leader",
    lock: { holder: SESSION, instance: "node-2", address: "10.0.0.2:6379", epoch: 57, modifyIndex: 57 },
    epoch: 57,
    fenceInMs: 3500,
    fenceAt: "2025-01-01T00:00:05.000Z",
    decision: { kind: "lead", reason: "holding the lock; Redis is primary", ageMs: 300 },
    redis: redis({ role: "master", masterAddr: null, linkUp: false, writable: true }),
    lagBytes: null,
    ...over,
  });
}

function member(instance: string, over: Partial<MemberEntry["member"]> = {}, session = `sess-${instance}`): MemberEntry {
  return {
    member: {
      instance, service: `redis-${instance}`, address: `10.0.0.${instance.slice(-1)}:6379`, role: "follower", eligible: true, redisUp: true,
      priority: 1, offset: 5000, replid: "r1", replid2: "", updated: "2025-01-01T00:00:00.000Z", ...over,
    },
    session,
    modifyIndex: 60,
  };
}

const MEMBERS = [member("node-1", { role: "leader" }), member("node-2"), member("node-3")];

interface Fake extends StatusSource {
  current: ElectorState;
  switchovers: (string | undefined)[];
  membersOf: () => Promise<MemberEntry[]>;
}

function fake(s: ElectorState, members: () => Promise<MemberEntry[]> = async () => MEMBERS): Fake {
  const f: Fake = {
    current: s,
    switchovers: [],
    membersOf: members,
    state: () => f.current,
    requestSwitchover(to) {
      if (f.current.role !== "leader") return false;
      f.switchovers.push(to);
      return true;
    },
    members: () => f.membersOf(),
    metrics: (st) => `# HELP consul_leader_is_leader x\n# TYPE consul_leader_is_leader gauge\nconsul_leader_is_leader ${st.role === "leader" ? 1 : 0}\n`,
  };
  return f;
}

const OPTS: StatusOptions = {
  version: "9.9.9",
  knobs: { CONSUL_LEADER_SERVICE_NAME: "redis", CONSUL_HTTP_TOKEN: "[redacted]" },
  livenessMaxAgeMs: 4750,
  maxLagBytes: 1048576,
  serviceName: "redis",
  key: "consul-leader/redis/lock",
  now: () => Date.parse("2025-01-01T00:00:10.000Z"),
};

async function get(source: StatusSource, path: string, init: RequestInit = {}, opts: StatusOptions = OPTS): Promise<{ status: number; body: string; type: string; headers: Headers }> {
  const res = await createStatusHandler(source, opts)(new Request(`http://x${path}`, init));
  return { status: res.status, body: await res.text(), type: res.headers.get("Content-Type") ?? "", headers: res.headers };
}

// ---- Routes

describe("GET /health", () => {
  test("answers 200 whatever the role", async () => {
    for (const s of [follower({ role: "starting", lock: null, redis: null }), follower({ role: "fenced" }), leader()]) {
      const r = await get(fake(s), "/health");
      expect(r.status).toBe(200);
      expect(r.body).toBe("ok\n");
    }
  });
});

describe("GET /liveness", () => {
  test("answers 200 while the loop ticked within the limit", async () => {
    const r = await get(fake(follower({ loopAgeMs: 4750 })), "/liveness");
    expect(r.status).toBe(200);
    expect(r.body).toContain("4750 ms ago (limit 4750 ms)");
  });

  test("answers 503 when the loop is stuck (its last tick is older than the limit)", async () => {
    const r = await get(fake(follower({ loopAgeMs: 60_000 })), "/liveness");
    expect(r.status).toBe(503);
    expect(r.body).toContain("60000 ms ago (limit 4750 ms): stuck");
  });

  test("answers 503 for a leader past its fencing deadline (the fencing timer did not fire)", async () => {
    const r = await get(fake(leader({ fenceInMs: -250 })), "/liveness");
    expect(r.status).toBe(503);
    expect(r.body).toContain("250 ms past the fencing deadline");
  });

  test("livenessMaxAgeMs is 2 x SLEEP + the request timeout", () => {
    expect(livenessMaxAgeMs({ sleepMs: 10_000, requestTimeoutMs: 1250 })).toBe(21_250);
    expect(livenessMaxAgeMs({ sleepMs: 2000, requestTimeoutMs: 750 })).toBe(4750);
  });
});

describe("GET /primary", () => {
  test("answers 200 on the lock holder whose Redis is a writable master", async () => {
    const r = await get(fake(leader()), "/primary");
    expect(r.status).toBe(200);
    expect(r.body).toBe("primary: holds the lock (epoch 57), Redis writable\n");
    expect(r.type).toBe("text/plain; charset=utf-8");
  });

  test("answers 200 on the leader in tags-only mode", async () => {
    expect((await get(fake(leader({ redis: null })), "/primary")).status).toBe(200);
  });

  const cases: [string, ElectorState, string][] = [
    ["a follower", follower(), "this node is follower; node-1 leads"],
    ["a candidate", follower({ role: "candidate", lock: { holder: null, instance: null, address: null, epoch: null, modifyIndex: 70 } }), "this node is candidate"],
    ["a fenced node", follower({ role: "fenced" }), "this node is fenced"],
    ["a leader whose Redis is fenced", leader({ redis: redis({ role: "master", writable: false, masterAddr: null }) }), "Redis is not a writable master"],
    ["a leader whose Redis is down", leader({ redis: redis({ role: "master", up: false, writable: false }) }), "Redis down"],
    ["a leader role without the lock in its view", leader({ lock: { holder: "sess-other", instance: "node-3", address: null, epoch: 60, modifyIndex: 60 } }), "the lock is not held by this node's session"],
  ];
  for (const [name, s, why] of cases) {
    test(`answers 503 on ${name}`, async () => {
      const r = await get(fake(s), "/primary");
      expect(r.status).toBe(503);
      expect(r.body).toContain(why);
    });
  }
});

describe("GET /replica", () => {
  test("answers 200 on a follower in sync with the leader's Redis", async () => {
    const r = await get(fake(follower()), "/replica");
    expect(r.status).toBe(200);
    expect(r.body).toBe("replica of 10.0.0.1:6379, 100 bytes behind\n");
  });

  test("answers 200 on a follower in tags-only mode", async () => {
    expect((await get(fake(follower({ redis: null, lagBytes: null })), "/replica")).status).toBe(200);
  });

  test("an unknown lag passes, as it does for the replica tag", async () => {
    const r = await get(fake(follower({ lagBytes: null })), "/replica");
    expect(r.status).toBe(200);
    expect(r.body).toContain("lag unknown");
  });

  const cases: [string, ElectorState, string][] = [
    ["the leader", leader(), "this node is leader"],
    ["a candidate", follower({ role: "candidate" }), "this node is candidate"],
    ["a replica whose Redis is down", follower({ redis: redis({ up: false }) }), "Redis down"],
    ["a follower whose Redis is a master", follower({ redis: redis({ role: "master", masterAddr: null }) }), "Redis is a master"],
    ["a loading replica", follower({ redis: redis({ loading: true }) }), "loading"],
    ["a syncing replica", follower({ redis: redis({ syncing: true }) }), "syncing"],
    ["a replica with its link down", follower({ redis: redis({ linkUp: false }) }), "link is down"],
    ["a replica of someone other than the leader", follower({ redis: redis({ masterAddr: "10.0.0.3:6379" }) }), "replicates from 10.0.0.3:6379, not the leader's 10.0.0.1:6379"],
    ["a replica lagging past CONSUL_LEADER_MAX_LAG", follower({ lagBytes: 2_000_000 }), "lags 2000000 bytes behind the primary (limit 1048576)"],
  ];
  for (const [name, s, why] of cases) {
    test(`answers 503 on ${name}`, async () => {
      const r = await get(fake(s), "/replica");
      expect(r.status).toBe(503);
      expect(r.body).toContain(why);
    });
  }

  test("?lag= overrides the limit, in bytes or with units", async () => {
    const f = fake(follower({ lagBytes: 20_000 }));
    expect((await get(f, "/replica?lag=20000")).status).toBe(200);
    expect((await get(f, "/replica?lag=19999")).status).toBe(503);
    expect((await get(f, "/replica?lag=16kB")).body).toContain("(limit 16384)");
    expect((await get(f, "/replica?lag=20kB")).status).toBe(200);
    expect((await get(f, "/replica?lag=1MB")).status).toBe(200);
    expect((await get(f, "/replica?lag=0")).status).toBe(503);
  });

  test("?lag= that is not a size is a 400 naming the value", async () => {
    const r = await get(fake(follower()), "/replica?lag=lots");
    expect(r.status).toBe(400);
    expect(r.body).toContain("lag=lots: not a size");
  });
});

describe("parseBytes", () => {
  const cases: [string, number | undefined][] = [
    ["0", 0], ["1048576", 1048576], ["16kB", 16384], ["16KB", 16384], ["16k", 16384], ["1MB", 1048576], ["1 MB", 1048576],
    ["2GB", 2 * 1024 ** 3], ["1TB", 1024 ** 4], ["10B", 10], ["1MiB", 1048576],
    ["", undefined], ["-1", undefined], ["1.5MB", undefined], ["1PB", undefined], ["MB", undefined], ["99999999TB", undefined],
  ];
  for (const [text, bytes] of cases) {
    test(`parseBytes(${JSON.stringify(text)}) is ${bytes}`, () => expect(parseBytes(text)).toBe(bytes));
  }
});

describe("GET /readiness", () => {
  const cases: [string, ElectorState, number, string][] = [
    ["a leader with a writable Redis", leader(), 200, "ready: primary"],
    ["a replica in sync", follower(), 200, "ready: replica of 10.0.0.1:6379"],
    ["a leader in tags-only mode", leader({ redis: null }), 200, "ready: primary"],
    ["a follower in tags-only mode", follower({ redis: null, lagBytes: null }), 200, "ready: replica"],
    ["a leader whose Redis is fenced", leader({ redis: redis({ role: "master", writable: false, masterAddr: null }) }), 503, "not ready: Redis is not a writable master"],
    ["a syncing replica", follower({ redis: redis({ syncing: true }) }), 503, "not ready: Redis is syncing"],
    ["a lagging replica", follower({ lagBytes: 2_000_000 }), 503, "not ready: lags 2000000 bytes"],
    ["a candidate", follower({ role: "candidate" }), 503, "not ready: this node is candidate"],
    ["a starting node", follower({ role: "starting", lock: null }), 503, "not ready: this node is starting"],
    ["a fenced node", follower({ role: "fenced" }), 503, "not ready: this node is fenced"],
    ["a replica whose Redis is down", follower({ redis: redis({ up: false, error: "REDIS_UNREACHABLE: connection refused" }) }), 503, "not ready: Redis down (REDIS_UNREACHABLE: connection refused)"],
    ["a candidate whose Redis is down", follower({ role: "candidate", redis: redis({ up: false }) }), 503, "not ready: Redis down"],
    ["a leader whose Redis is down", leader({ redis: redis({ role: "master", up: false, writable: false }) }), 503, "not ready: Redis down"],
    [
      "a leader fenced because its agent does not answer",
      leader({ role: "fenced", fenced: { reason: "cannot renew the lease: Consul agent unreachable since 2025-01-01T00:00:02.000Z; writes blocked until it answers", since: "2025-01-01T00:00:02.000Z" } }),
      503,
      "not ready: fenced: cannot renew the lease: Consul agent unreachable since 2025-01-01T00:00:02.000Z; writes blocked until it answers",
    ],
  ];
  for (const [name, s, status, why] of cases) {
    test(`answers ${status} on ${name}`, async () => {
      const r = await get(fake(s), "/readiness");
      expect(r.status).toBe(status);
      expect(r.body).toStartWith(why);
    });
  }
});

describe("Accept: application/json on the check routes", () => {
  const json = { headers: { Accept: "application/json" } };

  test("a passing check answers {ok, status, reason, role, instance} with the same status", async () => {
    const r = await get(fake(leader()), "/primary", json);
    expect(r.status).toBe(200);
    expect(r.type).toBe("application/json; charset=utf-8");
    expect(JSON.parse(r.body)).toEqual({ ok: true, status: 200, reason: "primary: holds the lock (epoch 57), Redis writable", role: "leader", instance: "node-2" });
  });

  test("a failing check says why in JSON, with the 503", async () => {
    const r = await get(fake(follower({ redis: redis({ up: false }) })), "/readiness", { headers: { Accept: "text/html, application/json;q=0.9" } });
    expect(r.status).toBe(503);
    expect(JSON.parse(r.body)).toEqual({ ok: false, status: 503, reason: "not ready: Redis down", role: "follower", instance: "node-2" });
  });

  for (const path of ["/health", "/liveness", "/readiness", "/primary", "/replica"]) {
    test(`${path} answers JSON when asked, and text otherwise`, async () => {
      const asked = await get(fake(follower()), path, json);
      expect(asked.type).toStartWith("application/json");
      const doc = JSON.parse(asked.body) as { ok: boolean; status: number; reason: string };
      expect(doc.status).toBe(asked.status);
      expect(doc.ok).toBe(asked.status < 400);
      const plain = await get(fake(follower()), path);
      expect(plain.type).toStartWith("text/plain");
      expect(plain.body.trim()).toBe(doc.reason);
      expect(asked.headers.get("Vary")).toBe("Accept");
    });
  }

  test("an unknown route asked for JSON answers a JSON 404", async () => {
    const r = await get(fake(follower()), "/nope", json);
    expect(r.status).toBe(404);
    expect(JSON.parse(r.body)).toMatchObject({ ok: false, status: 404 });
  });

  test("/state and /metrics keep their own types whatever is asked", async () => {
    expect((await get(fake(follower()), "/state", json)).type).toStartWith("application/json");
    expect((await get(fake(follower()), "/metrics", json)).type).toStartWith("text/plain; version=0.0.4");
  });
});

describe("GET /state", () => {
  test("is the elector's state plus the knobs and the version, as JSON", async () => {
    const s = leader();
    const r = await get(fake(s), "/state");
    expect(r.status).toBe(200);
    expect(r.type).toBe("application/json; charset=utf-8");
    const doc = JSON.parse(r.body);
    expect(doc).toEqual({ version: "9.9.9", ...JSON.parse(JSON.stringify(s)), knobs: OPTS.knobs });
    expect(doc).toEqual(JSON.parse(JSON.stringify(stateDocument(s, OPTS))));
  });

  test("never shows a secret value, even one that leaked into an error message", async () => {
    const s = follower({ consul: { ok: false, error: { type: "ConsulError", code: "CONSUL_FORBIDDEN", message: 'token "tok-123" and pw"zq9 lack a permission' } } });
    const opts = { ...OPTS, secrets: ["tok-123", 'pw"zq9'] };
    for (const path of ["/state", "/", "/metrics", "/primary"]) {
      const r = await get(fake(s), path, {}, opts);
      expect(r.body).not.toContain("tok-123");
      expect(r.body).not.toContain("zq9");
    }
    expect((await get(fake(s), "/state", {}, opts)).body).toContain("[redacted]");
  });
});

describe("GET /metrics", () => {
  test("is the source's Prometheus text for the current state, with the exposition content type", async () => {
    const r = await get(fake(leader()), "/metrics");
    expect(r.status).toBe(200);
    expect(r.type).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(r.body).toContain("consul_leader_is_leader 1\n");
  });
});

describe("GET /", () => {
  test("is a self-contained HTML page with this node, the lock holder, the members and recent decisions", async () => {
    const r = await get(fake(follower()), "/");
    expect(r.status).toBe(200);
    expect(r.type).toBe("text/html; charset=utf-8");
    const html = r.body;
    expect(html).toStartWith("<!doctype html>");
    expect(html).toContain(`<td id="lock-holder">node-1</td>`);
    expect(html).toContain(`<td id="lock-epoch">42</td>`);
    for (const m of ["node-1", "node-2", "node-3"]) expect(html).toContain(`data-instance="${m}"`);
    expect(html).toMatch(/<tr data-instance="node-1" class="holder">.*holds the lock/);
    expect(html).toContain("node-1 holds the lock");
    expect(html).toContain('<meta http-equiv="refresh"');
    // No external assets, no scripts.
    expect(html).not.toMatch(/<script|<link|src=|@import|url\(/i);
  });

  test("escapes what it shows", async () => {
    const f = fake(follower({ decision: { kind: "wait", reason: "<img onerror=x> & co", ageMs: 1 } }));
    const html = (await get(f, "/")).body;
    expect(html).toContain("&lt;img onerror=x&gt; &amp; co");
    expect(html).not.toContain("<img");
  });

  test("still renders when the members cannot be read, and says why", async () => {
    const f = fake(follower(), () => Promise.reject(new Error("connection refused")));
    const r = await get(f, "/");
    expect(r.status).toBe(200);
    expect(r.body).toContain("Cannot read the members from Consul: connection refused");
    expect(r.body).toContain(`<td id="lock-holder">node-1</td>`);
  });

  test("shows nobody as holder when the lock is free", async () => {
    const html = (await get(fake(follower({ role: "candidate", lock: { holder: null, instance: null, address: null, epoch: null, modifyIndex: 9 } })), "/")).body;
    expect(html).toContain(`<td id="lock-holder"><span class="bad">nobody</span></td>`);
  });
});

describe("POST /switchover", () => {
  test("on the leader: 202, and the elector is asked", async () => {
    const f = fake(leader());
    const r = await get(f, "/switchover", { method: "POST" });
    expect(r.status).toBe(202);
    expect(r.body).toBe("switchover requested: node-2 (epoch 57) hands over to the most caught-up replica\n");
    expect(f.switchovers).toEqual([undefined]);
  });

  test("?to= names the successor, by instance or by Redis address", async () => {
    const f = fake(leader());
    expect((await get(f, "/switchover?to=node-3", { method: "POST" })).status).toBe(202);
    expect((await get(f, "/switchover?to=10.0.0.1:6379", { method: "POST" })).status).toBe(202);
    expect(f.switchovers).toEqual(["node-3", "10.0.0.1:6379"]);
  });

  test("on a follower: 409 naming the leader, and the elector is not asked", async () => {
    const f = fake(follower());
    const r = await get(f, "/switchover", { method: "POST" });
    expect(r.status).toBe(409);
    expect(r.body).toContain("not the leader: this node is follower; node-1 leads");
    expect(f.switchovers).toEqual([]);
  });

  test("?to= an unknown, ineligible or sessionless member: 409 listing the eligible ones", async () => {
    const members = [member("node-1"), member("node-3", { eligible: false }), member("node-4", {}, "")];
    const f = fake(leader(), async () => members);
    for (const to of ["nobody", "node-3", "node-4"]) {
      const r = await get(f, `/switchover?to=${to}`, { method: "POST" });
      expect(r.status).toBe(409);
      expect(r.body).toContain(`${to} is not an eligible member with a live session; eligible: node-1`);
    }
    expect(f.switchovers).toEqual([]);
  });

  test("?to= this node: 409, nothing to do", async () => {
    const r = await get(fake(leader()), "/switchover?to=node-2", { method: "POST" });
    expect(r.status).toBe(409);
    expect(r.body).toContain("node-2 already leads");
  });

  test("no eligible member at all: 409", async () => {
    const r = await get(fake(leader(), async () => [member("node-2"), member("node-3", { eligible: false })]), "/switchover", { method: "POST" });
    expect(r.status).toBe(409);
    expect(r.body).toContain("no eligible member");
  });

  test("members unreadable: 503 with the reason", async () => {
    const r = await get(fake(leader(), () => Promise.reject(new Error("timeout"))), "/switchover", { method: "POST" });
    expect(r.status).toBe(503);
    expect(r.body).toContain("cannot read the group's members from Consul: timeout");
  });

  test("the elector refusing (it stopped leading meanwhile): 503", async () => {
    const f = fake(leader());
    f.requestSwitchover = () => false;
    expect((await get(f, "/switchover", { method: "POST" })).status).toBe(503);
  });

});

describe("methods and paths", () => {
  test("GET /switchover is 405 with Allow: POST", async () => {
    const r = await get(fake(leader()), "/switchover");
    expect(r.status).toBe(405);
    expect(r.headers.get("Allow")).toBe("POST");
  });

  test("POST and DELETE on a read route are 405 with Allow: GET, HEAD", async () => {
    for (const method of ["POST", "DELETE", "PUT"]) {
      const r = await get(fake(leader()), "/primary", { method });
      expect(r.status).toBe(405);
      expect(r.headers.get("Allow")).toBe("GET, HEAD");
    }
  });

  test("HEAD on a check route carries the check's status", async () => {
    expect((await get(fake(follower()), "/primary", { method: "HEAD" })).status).toBe(503);
    expect((await get(fake(leader()), "/primary", { method: "HEAD" })).status).toBe(200);
  });

  test("an unknown path is 404", async () => {
    for (const path of ["/nope", "/primary/", "/State"]) expect((await get(fake(leader()), path)).status).toBe(404);
  });

  test("answers are never cached", async () => {
    expect((await get(fake(leader()), "/primary")).headers.get("Cache-Control")).toBe("no-store");
  });

  test("a source that throws is a 500 with the reason, not a crash", async () => {
    const f = fake(leader());
    f.state = () => {
      throw new Error("boom");
    };
    const r = await get(f, "/state");
    expect(r.status).toBe(500);
    expect(r.body).toContain("/state failed: boom");
  });
});

// ---- The knob

describe("CONSUL_LEADER_HTTP_ADDR", () => {
  const io = { readFile: () => "", readDir: () => [], hostname: "h", randomId: () => "r" };
  const load = (env: Env) => loadConfig(env, io);

  test("unset: no status server", () => {
    const r = load({});
    expect(r.ok && r.config.http).toBeUndefined();
  });

  test("host:port is parsed into Config.http", () => {
    const r = load({ CONSUL_LEADER_HTTP_ADDR: "127.0.0.1:8008" });
    expect(r.ok && r.config.http).toEqual({ host: "127.0.0.1", port: 8008, auth: "writes", allowedHosts: [] });
    const v6 = load({ CONSUL_LEADER_HTTP_ADDR: "[::1]:8008" });
    expect(v6.ok && v6.config.http).toEqual({ host: "::1", port: 8008, auth: "writes", allowedHosts: [] });
  });

  for (const bad of ["8008", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "http://127.0.0.1:8008"]) {
    test(`"${bad}" is a configuration problem naming the knob and the value`, () => {
      const r = load({ CONSUL_LEADER_HTTP_ADDR: bad });
      expect(r.ok ? [] : r.problems).toEqual([`CONSUL_LEADER_HTTP_ADDR="${bad}": must be host:port, e.g. 127.0.0.1:8008`]);
    });
  }
});
