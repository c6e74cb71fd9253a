import { describe, expect, test } from "bun:test";
import type { Clock } from "../clock.ts";
import type { MemberEntry } from "../consul/members.ts";
import type { LockView } from "../election/types.ts";
import { silentLogger } from "../log.ts";
import { SentinelEndpoint, type Socket } from "./endpoint.ts";
import type { Facts } from "./view.ts";

/** A clock moved by hand. */
function manualClock() {
  let now = 0;
  let timers: { at: number; fn: () => void; live: boolean }[] = [];
  const clock: Clock = {
    now: () => now,
    monotonic: () => now,
    sleep: () => Promise.resolve(),
    timer(ms, fn) {
      const t = { at: now + ms, fn, live: true };
      timers.push(t);
      return { cancel: () => void (t.live = false) };
    },
  };
  const advance = (ms: number) => {
    now += ms;
    for (const t of timers.filter((x) => x.live && x.at <= now)) {
      t.live = false;
      t.fn();
    }
    timers = timers.filter((t) => t.live);
  };
  return { clock, advance };
}

/** A socket that records what was written, taking at most `window` bytes per write when set. */
class FakeSocket implements Socket {
  written = "";
  ended = false;
  window = Infinity;
  readonly remoteAddress = "127.0.0.1";
  write(data: Uint8Array): number {
    if (this.ended) return -1;
    const n = Math.min(data.length, this.window);
    this.written += Buffer.from(data.subarray(0, n)).toString();
    return n;
  }
  end(): void {
    this.ended = true;
  }
  take(): string {
    const w = this.written;
    this.written = "";
    return w;
  }
}

const held = (instance: string, address: string | undefined, extra: object = {}): LockView => ({
  holder: `s-${instance}`,
  value: { session: `s-${instance}`, instance, service: instance, epoch: 5, ...(address ? { address } : {}), ...extra },
  modifyIndex: 5,
  exists: true,
});

const member = (instance: string, address: string, sentinel?: string, role = "follower"): MemberEntry => ({
  member: { instance, service: instance, address, role, eligible: true, redisUp: true, priority: 1, offset: 100, replid: "r", replid2: "", updated: "", ...(sentinel ? { sentinel } : {}) },
  session: `s-${instance}`,
  modifyIndex: 1,
});

function setup(o: { password?: string; waitMs?: number; lock?: LockView } = {}) {
  const c = manualClock();
  let lock: LockView | undefined = o.lock ?? held("a", "10.0.0.1:6379");
  const facts = (): Facts => ({ lock, self: "b", role: "follower", redisWritable: false });
  const members = [member("a", "10.0.0.1:6379", "10.0.0.1:26379", "leader"), member("b", "10.0.0.2:6379", "10.0.0.2:26379"), member("c", "10.0.0.3:6379", "10.0.0.3:26379")];
  const ep = new SentinelEndpoint(
    { masterName: "mym", waitMs: o.waitMs ?? 1000, announce: { host: "10.0.0.2", port: 26379 }, downAfterMs: 2000, instance: "b", version: "0.1.0", pid: 1, ...(o.password ? { password: o.password } : {}) },
    { clock: c.clock, log: silentLogger, facts, members: () => Promise.resolve(members) },
  );
  const sock = new FakeSocket();
  ep.open(sock);
  const send = async (text: string, s: FakeSocket = sock) => {
    ep.data(s, Buffer.from(text));
    await Bun.sleep(1);
    return s.take();
  };
  return { ep, sock, send, clock: c, setLock: (l: LockView | undefined) => { lock = l; ep.refresh(); } };
}

const cmd = (...args: string[]) => `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`;

describe("SentinelEndpoint", () => {
  test("names the current primary", async () => {
    const { send } = setup();
    expect(await send(cmd("SENTINEL", "get-master-addr-by-name", "mym"))).toBe("*2\r\n$8\r\n10.0.0.1\r\n$4\r\n6379\r\n");
    expect(await send(cmd("SENTINEL", "get-master-addr-by-name", "other"))).toBe("*-1\r\n");
  });

  test("answers pipelined requests in order, across partial frames", async () => {
    const { send } = setup();
    const all = cmd("PING") + cmd("CLIENT", "SETNAME", "app") + cmd("CLIENT", "GETNAME") + cmd("ROLE");
    expect(await send(all.slice(0, 7))).toBe("");
    expect(await send(all.slice(7))).toBe("+PONG\r\n+OK\r\n$3\r\napp\r\n*2\r\n$8\r\nsentinel\r\n*1\r\n$3\r\nmym\r\n");
  });

  test("unknown commands and subcommands get errors naming them", async () => {
    const { send } = setup();
    expect(await send(cmd("GET", "x"))).toBe("-ERR unknown command 'GET', with args beginning with: 'x' \r\n");
    expect(await send(cmd("SENTINEL", "nope"))).toBe("-ERR unknown subcommand 'nope'. Try SENTINEL HELP.\r\n");
    expect(await send(cmd("SENTINEL", "FAILOVER", "mym"))).toStartWith("-ERR SENTINEL FAILOVER is not supported by consul-leader: ");
    expect(await send(cmd("SENTINEL"))).toBe("-ERR wrong number of arguments for 'sentinel' command\r\n");
  });

  test("garbage gets a protocol error and the connection is closed", async () => {
    const { send, sock } = setup();
    expect(await send(cmd("PING") + "*1\r\n$-3\r\n")).toBe("+PONG\r\n-ERR Protocol error: invalid bulk length\r\n");
    expect(sock.ended).toBe(true);
  });

  test("HELLO 3 switches to RESP3: maps and pushes", async () => {
    const { send } = setup();
    const hello = await send(cmd("HELLO", "3"));
    expect(hello).toStartWith("%6\r\n$6\r\nserver\r\n$5\r\nredis\r\n");
    expect(hello).toContain("$4\r\nmode\r\n$8\r\nsentinel\r\n");
    expect(await send(cmd("SENTINEL", "master", "mym"))).toStartWith("%20\r\n$4\r\nname\r\n$3\r\nmym\r\n$2\r\nip\r\n$8\r\n10.0.0.1\r\n");
    expect(await send(cmd("SUBSCRIBE", "+switch-master"))).toBe(">3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n");
    // RESP3 allows any command while subscribed.
    expect(await send(cmd("SENTINEL", "get-master-addr-by-name", "mym"))).toBe("*2\r\n$8\r\n10.0.0.1\r\n$4\r\n6379\r\n");
    expect(await send(cmd("HELLO", "4"))).toBe("-NOPROTO unsupported protocol version\r\n");
  });

  test("RESP2 subscribers may only (un)subscribe and ping", async () => {
    const { send } = setup();
    await send(cmd("SUBSCRIBE", "a"));
    expect(await send(cmd("PING"))).toBe("*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    expect(await send(cmd("SENTINEL", "masters"))).toStartWith("-ERR Can't execute 'sentinel|masters': only (P|S)SUBSCRIBE");
    expect(await send(cmd("UNSUBSCRIBE"))).toBe("*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n");
  });

  test("lists the other sidecars' endpoints as sentinels and the other Redis as replicas", async () => {
    const { send } = setup();
    const s = await send(cmd("SENTINEL", "sentinels", "mym"));
    expect(s).toStartWith("*2\r\n");
    expect(s).toContain("10.0.0.1\r\n$4\r\nport\r\n$5\r\n26379");
    expect(s).toContain("10.0.0.3");
    expect(s).not.toContain("10.0.0.2");
    const r = await send(cmd("SENTINEL", "replicas", "mym"));
    expect(r).toStartWith("*2\r\n");
    expect(r).toContain("$13\r\n10.0.0.2:6379\r\n");
    expect(r).not.toContain("10.0.0.1:6379");
    const masters = await send(cmd("SENTINEL", "masters"));
    expect(masters).toContain("$5\r\nflags\r\n$6\r\nmaster\r\n");
    expect(masters).toContain("$19\r\nnum-other-sentinels\r\n$1\r\n2\r\n");
  });

  test("during a failover a query waits for the new primary and gets it the moment it is current", async () => {
    const { ep, sock, setLock, clock } = setup();
    setLock({ holder: null, value: { session: "s-a", instance: "a", service: "a", address: "10.0.0.1:6379", released: "redis-down" }, modifyIndex: 6, exists: true });
    ep.data(sock, Buffer.from(cmd("SENTINEL", "get-master-addr-by-name", "mym") + cmd("PING")));
    await Bun.sleep(1);
    clock.advance(300);
    await Bun.sleep(1);
    expect(sock.take()).toBe("");
    setLock(held("c", "10.0.0.3:6379"));
    await Bun.sleep(1);
    expect(sock.take()).toBe("*2\r\n$8\r\n10.0.0.3\r\n$4\r\n6379\r\n+PONG\r\n");
  });

  test("a query still waiting after the wait gets the old address, flagged, as from Sentinel mid-failover", async () => {
    const { ep, sock, setLock, clock, send } = setup({ waitMs: 500 });
    const sub = new FakeSocket();
    ep.open(sub);
    await send(cmd("PSUBSCRIBE", "*"), sub);
    setLock({ holder: null, value: { session: "s-a", instance: "a", service: "a", address: "10.0.0.1:6379", released: "redis-down" }, modifyIndex: 6, exists: true });
    expect(sub.take()).toContain("+sdown\r\n$24\r\nmaster mym 10.0.0.1 6379\r\n");
    ep.data(sock, Buffer.from(cmd("SENTINEL", "master", "mym")));
    await Bun.sleep(1);
    clock.advance(500);
    await Bun.sleep(1);
    const reply = sock.take();
    expect(reply).toContain("$5\r\nflags\r\n$41\r\nmaster,s_down,o_down,failover_in_progress\r\n");
    expect(reply).toContain("$8\r\n10.0.0.1\r\n");
    setLock(held("c", "10.0.0.3:6379"));
    const events = sub.take();
    expect(events).toContain("+failover-end");
    expect(events).toContain("$14\r\n+switch-master\r\n$31\r\nmym 10.0.0.1 6379 10.0.0.3 6379\r\n");
  });

  test("with a password, nothing but AUTH and HELLO AUTH is answered before it", async () => {
    const { send } = setup({ password: "s3cret-pass" });
    expect(await send(cmd("SENTINEL", "get-master-addr-by-name", "mym"))).toBe("-NOAUTH Authentication required.\r\n");
    expect(await send(cmd("HELLO", "3"))).toStartWith("-NOAUTH HELLO must be called with the client already authenticated");
    expect(await send(cmd("AUTH", "wrong"))).toBe("-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    expect(await send(cmd("AUTH", "other", "s3cret-pass"))).toBe("-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    expect(await send(cmd("AUTH", "s3cret-pass"))).toBe("+OK\r\n");
    expect(await send(cmd("PING"))).toBe("+PONG\r\n");
    const { send: send2 } = setup({ password: "s3cret-pass" });
    expect(await send2(cmd("HELLO", "3", "AUTH", "default", "s3cret-pass", "SETNAME", "x"))).toStartWith("%6\r\n");
  });

  test("without a password, AUTH <password> is refused as Redis does, AUTH default <anything> accepted", async () => {
    const { send } = setup();
    expect(await send(cmd("AUTH", "x"))).toStartWith("-ERR AUTH <password> called without any password configured");
    expect(await send(cmd("AUTH", "default", "x"))).toBe("+OK\r\n");
  });

  test("a client that does not read its replies is dropped, not buffered without end", async () => {
    const { ep, sock } = setup();
    sock.window = 0;
    const ping = cmd("PING", "x".repeat(60_000));
    for (let i = 0; i < 20 && !sock.ended; i++) {
      ep.data(sock, Buffer.from(ping));
      await Bun.sleep(1);
    }
    expect(sock.ended).toBe(true);
    expect(ep.connections).toBe(0);
  });

  test("QUIT answers OK and closes", async () => {
    const { send, sock } = setup();
    expect(await send(cmd("QUIT") + cmd("PING"))).toBe("+OK\r\n");
    expect(sock.ended).toBe(true);
  });
});
