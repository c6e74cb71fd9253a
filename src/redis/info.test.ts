import { describe, expect, test } from "bun:test";
import { formatHostPort, parseHostPort } from "../host-port.ts";
import { parseInfo } from "./info.ts";

/** INFO output as Redis writes it: sections, CRLF line ends. */
function info(lines: string[]): string {
  return lines.join("\r\n") + "\r\n";
}

const MASTER = info([
  "# Server",
  "redis_version:7.2.4",
  "run_id:8d5a6d1c0f6e4b1e9e3f2b7c1a0d9e8f7a6b5c4d",
  "tcp_port:6379",
  "",
  "# Persistence",
  "loading:0",
  "rdb_bgsave_in_progress:0",
  "",
  "# Replication",
  "role:master",
  "connected_slaves:2",
  "min_slaves_good_slaves:2",
  "slave0:ip=10.0.0.2,port=6379,state=online,offset=123456,lag=0",
  "slave1:ip=10.0.0.3,port=6380,state=wait_bgsave,offset=0,lag=1",
  "master_failover_state:no-failover",
  "master_replid:1111aaaa2222bbbb3333cccc4444dddd5555eeee",
  "master_replid2:0000000000000000000000000000000000000000",
  "master_repl_offset:123456",
  "second_repl_offset:-1",
  "repl_backlog_active:1",
]);

const REPLICA_UP = info([
  "# Server",
  "run_id:aaaabbbbccccddddeeeeffff0000111122223333",
  "# Persistence",
  "loading:0",
  "# Replication",
  "role:slave",
  "master_host:10.0.0.1",
  "master_port:6379",
  "master_link_status:up",
  "master_last_io_seconds_ago:1",
  "master_sync_in_progress:0",
  "slave_read_repl_offset:123400",
  "slave_repl_offset:123400",
  "slave_priority:100",
  "slave_read_only:1",
  "replica_announced:1",
  "connected_slaves:0",
  "master_failover_state:no-failover",
  "master_replid:1111aaaa2222bbbb3333cccc4444dddd5555eeee",
  "master_replid2:0000000000000000000000000000000000000000",
  "master_repl_offset:123400",
]);

const REPLICA_DOWN_SYNCING = info([
  "# Persistence",
  "loading:1",
  "# Replication",
  "role:slave",
  "master_host:10.0.0.1",
  "master_port:6379",
  "master_link_status:down",
  "master_last_io_seconds_ago:-1",
  "master_sync_in_progress:1",
  "master_link_down_since_seconds:42",
  "master_failover_state:no-failover",
  "master_replid:e0e0e0e0ffff0000ffff0000ffff0000ffff0000",
  "master_replid2:1111aaaa2222bbbb3333cccc4444dddd5555eeee",
  "master_repl_offset:0",
]);

describe("parseInfo", () => {
  test("parseInfo reads a master with its replicas", () => {
    expect(parseInfo(MASTER)).toEqual({
      role: "master",
      runId: "8d5a6d1c0f6e4b1e9e3f2b7c1a0d9e8f7a6b5c4d",
      loading: false,
      masterHost: null,
      masterPort: null,
      linkUp: false,
      linkDownSeconds: 0,
      syncing: false,
      offset: 123456,
      replid: "1111aaaa2222bbbb3333cccc4444dddd5555eeee",
      replid2: "0000000000000000000000000000000000000000",
      failoverState: "no-failover",
      replicas: [
        { host: "10.0.0.2", port: 6379, state: "online", offset: 123456, lag: 0 },
        { host: "10.0.0.3", port: 6380, state: "wait_bgsave", offset: 0, lag: 1 },
      ],
    });
  });

  test("parseInfo reads role:slave as a replica with its link up", () => {
    expect(parseInfo(REPLICA_UP)).toEqual({
      role: "replica",
      runId: "aaaabbbbccccddddeeeeffff0000111122223333",
      loading: false,
      masterHost: "10.0.0.1",
      masterPort: 6379,
      linkUp: true,
      linkDownSeconds: 0,
      syncing: false,
      offset: 123400,
      replid: "1111aaaa2222bbbb3333cccc4444dddd5555eeee",
      replid2: "0000000000000000000000000000000000000000",
      failoverState: "no-failover",
      replicas: [],
    });
  });

  test("parseInfo reads a loading replica whose link is down in the middle of a full sync", () => {
    const r = parseInfo(REPLICA_DOWN_SYNCING);
    expect({ role: r.role, loading: r.loading, linkUp: r.linkUp, linkDownSeconds: r.linkDownSeconds, syncing: r.syncing, offset: r.offset, replid2: r.replid2 }).toEqual({
      role: "replica",
      loading: true,
      linkUp: false,
      linkDownSeconds: 42,
      syncing: true,
      offset: 0,
      replid2: "1111aaaa2222bbbb3333cccc4444dddd5555eeee",
    });
  });

  test("parseInfo reads LF line ends as well as CRLF", () => {
    expect(parseInfo(REPLICA_UP.replaceAll("\r\n", "\n"))).toEqual(parseInfo(REPLICA_UP));
  });

  test("parseInfo reads a FAILOVER in progress", () => {
    const text = MASTER.replace("master_failover_state:no-failover", "master_failover_state:waiting-for-sync");
    expect(parseInfo(text).failoverState).toBe("waiting-for-sync");
  });

  test("parseInfo ignores a master's link fields", () => {
    const text = MASTER + info(["master_link_status:up", "master_link_down_since_seconds:9", "master_host:10.9.9.9"]);
    const r = parseInfo(text);
    expect([r.linkUp, r.linkDownSeconds, r.masterHost, r.masterPort]).toEqual([false, 0, null, null]);
  });

  test("parseInfo keeps values that contain colons whole", () => {
    const r = parseInfo(info(["role:slave", "master_host:fe80::1", "master_port:6379"]));
    expect([r.masterHost, r.masterPort]).toEqual(["fe80::1", 6379]);
  });

  test("parseInfo of empty text is a replica with nothing known", () => {
    expect(parseInfo("")).toEqual({
      role: "replica",
      runId: "",
      loading: false,
      masterHost: null,
      masterPort: 0,
      linkUp: false,
      linkDownSeconds: 0,
      syncing: false,
      offset: 0,
      replid: "",
      replid2: "",
      failoverState: "no-failover",
      replicas: [],
    });
  });
});

describe("parseHostPort", () => {
  const valid: [text: string, host: string, port: number][] = [
    ["redis:6379", "redis", 6379],
    ["10.0.0.1:6380", "10.0.0.1", 6380],
    ["redis.service.consul:1", "redis.service.consul", 1],
    ["redis:65535", "redis", 65535],
    ["[::1]:6379", "::1", 6379],
    ["[fe80::1%eth0]:6379", "fe80::1%eth0", 6379],
    ["  redis:6379\n", "redis", 6379],
  ];
  for (const [text, host, port] of valid) {
    test(`parseHostPort reads ${JSON.stringify(text)}`, () => {
      expect(parseHostPort(text)).toEqual({ host, port });
    });
  }

  const invalid: [text: string, why: string][] = [
    ["", "empty"],
    ["redis", "no port"],
    ["redis:", "empty port"],
    [":6379", "no host"],
    ["redis:0", "port 0"],
    ["redis:65536", "port above 65535"],
    ["redis:123456", "six-digit port"],
    ["redis:63a9", "port not a number"],
    ["redis:-1", "negative port"],
    ["red is:6379", "space in host"],
    ["redis://redis:6379", "a URL, not host:port"],
    ["[::1:6379", "unbalanced bracket"],
  ];
  for (const [text, why] of invalid) {
    test(`parseHostPort rejects ${JSON.stringify(text)} (${why})`, () => {
      expect(parseHostPort(text)).toBeUndefined();
    });
  }
});

describe("formatHostPort", () => {
  test("formatHostPort writes host:port", () => {
    expect(formatHostPort({ host: "10.0.0.1", port: 6379 })).toBe("10.0.0.1:6379");
  });
  test("formatHostPort brackets an IPv6 host", () => {
    expect(formatHostPort({ host: "::1", port: 6379 })).toBe("[::1]:6379");
  });
  test("formatHostPort output parses back to the same address", () => {
    for (const a of [{ host: "redis", port: 6379 }, { host: "::1", port: 1 }, { host: "fe80::1", port: 65535 }, { host: "10.0.0.1", port: 6380 }]) {
      expect(parseHostPort(formatHostPort(a))).toEqual(a);
    }
  });
});
