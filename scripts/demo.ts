/**
 * The local demo (`npm run demo`): a Consul dev agent, three Redis and three
 * sidecars on loopback, each with its status server on; writes through the
 * primary found in Consul, kills the primary's Redis, and shows the failover
 * as it happens. It prints the exact `consul-leader status` command for its
 * group and every status page's URL. Cleans up and exits 0 unless `--keep` is
 * given, which leaves everything running until Ctrl-C.
 *
 * The group locks the key its service name implies (consul-leader/demo/lock),
 * as a real deployment would, so the status command needs only the name.
 */

import { relative } from "node:path";
import { startDevAgent } from "../test/harness/consul.ts";
import { RedisGroup } from "../test/harness/group.ts";
import { freePort, Scope } from "../test/harness/proc.ts";
import { BINARY } from "../test/harness/sidecar.ts";

const keep = process.argv.includes("--keep");
const t0 = performance.now();
const say = (msg: string) => console.log(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${msg}`);

const scope = new Scope("demo");
Scope.current = scope;
let exitCode = 0;

try {
  say("starting a Consul dev agent...");
  const consul = await startDevAgent();
  say(`consul is up at http://${consul.addr} (UI: http://${consul.addr}/ui)`);

  const http = [freePort(), freePort(), freePort()];
  const group = await RedisGroup.start(consul, {
    name: "demo",
    key: "consul-leader/demo/lock",
    env: (i) => ({ CONSUL_LEADER_LOG_LEVEL: "info", CONSUL_LEADER_CHECK_TTL: "5s", CONSUL_LEADER_FENCE_MARGIN: "1s", CONSUL_LEADER_SLEEP: "10", CONSUL_LEADER_HTTP_ADDR: `127.0.0.1:${http[i]}` }),
  });
  for (const m of group.members) {
    say(`${m.id}: redis on ${m.redis.addr}, sidecar pid ${m.sidecar.pid}, status page http://127.0.0.1:${http[m.index]}/`);
    m.sidecar.proc.onLine((line) => {
      try {
        const l = JSON.parse(line) as Record<string, unknown>;
        if (l["msg"] === "role changed") say(`  ${m.id} sidecar: ${l["from"]} -> ${l["to"]} (${l["reason"]})`);
      } catch {
        // not a log line
      }
    });
  }

  const primary = await group.converged(30_000);
  say(`primary: ${primary.id}; replicas: ${group.members.filter((m) => m !== primary).map((m) => m.id).join(", ")}`);
  say(`clients find it with: curl 'http://${consul.addr}/v1/health/service/demo?passing&tag=primary'`);
  const bin = relative(process.cwd(), BINARY) || BINARY;
  const env = `CONSUL_HTTP_ADDR=${consul.addr} CONSUL_LEADER_SERVICE_NAME=demo`;
  say(`the group as consul-leader sees it: ${env} ${bin} status`);

  const keys = 1000;
  const client = primary.redis.client();
  await client.connect();
  for (let i = 0; i < keys; i++) await client.send("SET", [`demo:${i}`, String(i)]);
  client.close();
  say(`wrote ${keys} keys through the primary`);
  for (const m of group.members) {
    while (Number(await m.redis.cmd("DBSIZE")) < keys) await Bun.sleep(20);
  }
  say("both replicas have every key");

  say(`kill -9 the primary's Redis (pid ${primary.redis.proc.pid})`);
  const killedAt = performance.now();
  await primary.redis.kill9();
  const { member: next, at } = await group.newWritablePrimary(primary.id, 30_000);
  say(`new primary: ${next.id}, writable and tagged in Consul ${Math.round(at - killedAt)} ms after the kill`);
  const survived = Number(await next.redis.cmd("DBSIZE"));
  say(`data check: ${survived >= keys ? "all" : "ONLY"} ${Math.min(survived, keys)}/${keys} keys on the new primary`);
  if (survived < keys) exitCode = 1;

  say(`restarting the old primary's Redis (empty: persistence is off in this demo)`);
  await primary.redis.restart();
  await group.converged(30_000);
  while (Number(await primary.redis.cmd("DBSIZE")) < keys) await Bun.sleep(50);
  say(`${primary.id} rejoined as a replica of ${next.id} and resynced all ${keys} keys`);

  if (keep) {
    say("--keep: everything stays up. Try:");
    console.log(`   ${env} ${bin} status`);
    console.log(`   ${env} ${bin} switchover        # hand the primary role to the most caught-up replica`);
    console.log(`   ${env} ${bin} pause             # no failover until: ... resume`);
    console.log(`   curl -s -H 'Accept: application/json' http://127.0.0.1:${http[next.index]}/readiness`);
    console.log(`   curl -s 'http://${consul.addr}/v1/health/service/demo?passing&tag=primary' | jq '.[].Service.ID'`);
    console.log(`   redis-cli -p ${next.redis.port} info replication`);
    console.log(`   kill -TERM ${next.sidecar.pid}   # graceful handover of the primary role`);
    console.log("   Ctrl-C stops and cleans up.");
    await new Promise<void>((resolve) => {
      process.once("SIGINT", () => resolve());
      process.once("SIGTERM", () => resolve());
    });
  }
} catch (err) {
  console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
  scope.dump();
  exitCode = 1;
} finally {
  say("cleaning up");
  await scope.close();
}
say(exitCode === 0 ? "done" : "done, with errors");
process.exit(exitCode);
