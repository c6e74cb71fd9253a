# The same Redis group with the raw_exec driver: the consul-leader binary and
# redis-server from the host. This is the job the end-to-end test runs on a
# real Nomad agent (test/integration/nomad.test.ts).
#
#   nomad job run -var consul_leader=/usr/local/bin/consul-leader nomad/redis-raw-exec.nomad.hcl

variable "count" {
  description = "Number of Redis instances (one primary, the rest replicas)."
  type        = number
  default     = 3
}

variable "consul_leader" {
  description = "Absolute path of the consul-leader binary on the clients."
  type        = string
  default     = "/usr/local/bin/consul-leader"
}

variable "redis_server" {
  description = "Absolute path of redis-server on the clients."
  type        = string
  default     = "/usr/bin/redis-server"
}

variable "redis_password" {
  description = "requirepass/masterauth for every Redis; empty for none."
  type        = string
  default     = ""
}

variable "consul_http_addr" {
  description = "The local Consul agent."
  type        = string
  default     = "127.0.0.1:8500"
}

variable "service_name" {
  description = "Consul service (and lock) name."
  type        = string
  default     = "redis"
}

variable "tags" {
  description = "Static tags on the redis service; changing them makes Nomad re-register it."
  type        = list(string)
  default     = ["v1"]
}

job "redis" {
  type = "service"

  group "redis" {
    count = var.count

    network {
      port "db" {}
      port "leader" {}
    }

    service {
      name                = var.service_name
      port                = "db"
      provider            = "consul"
      enable_tag_override = true
      tags                = var.tags
      check {
        name     = "consul-leader alive"
        type     = "http"
        port     = "leader"
        path     = "/liveness"
        interval = "2s"
        timeout  = "1s"
        # A sidecar whose election loop is stuck (/liveness fails past 2 x
        # SLEEP + a request timeout) is restarted; a restart re-adopts its
        # session, so it is not a failover. The grace covers its start.
        task = "consul-leader"
        check_restart {
          limit = 3
          grace = "30s"
        }
      }
    }

    service {
      name     = "${var.service_name}-primary"
      port     = "db"
      provider = "consul"
      check {
        name     = "primary"
        type     = "http"
        port     = "leader"
        path     = "/primary"
        interval = "1s"
        timeout  = "1s"
      }
    }

    task "consul-leader" {
      lifecycle {
        hook    = "prestart"
        sidecar = true
      }
      driver = "raw_exec"
      config {
        command = var.consul_leader
      }
      env {
        CONSUL_HTTP_ADDR             = var.consul_http_addr
        CONSUL_LEADER_SERVICE_NAME   = var.service_name
        CONSUL_LEADER_REPLICA_LABEL  = "replica"
        CONSUL_LEADER_REDIS_ADDR     = "${NOMAD_ADDR_db}"
        CONSUL_LEADER_ANNOUNCE_ADDR  = "${NOMAD_ADDR_db}"
        CONSUL_LEADER_REDIS_PASSWORD = var.redis_password
        CONSUL_LEADER_HTTP_ADDR      = "${NOMAD_ADDR_leader}"
        CONSUL_LEADER_LOG_LEVEL      = "info"
      }
      kill_timeout = "5s"
      # As in redis.nomad.hcl, which says how this was measured.
      resources {
        cpu    = 50
        memory = 128
      }
    }

    task "redis" {
      driver = "raw_exec"
      config {
        command = var.redis_server
        args = concat(
          ["--port", "${NOMAD_PORT_db}", "--bind", "${NOMAD_IP_db}", "--replicaof", "127.0.0.1", "1", "--save", "", "--appendonly", "no", "--dir", "${NOMAD_TASK_DIR}"],
          # Without a password, Redis's protected mode refuses every connection
          # that is not from loopback: the sidecar's (it connects to the
          # client's address) and the replicas' from other hosts. The official
          # Redis image turns it off the same way.
          var.redis_password == "" ? ["--protected-mode", "no"] : ["--requirepass", var.redis_password, "--masterauth", var.redis_password],
        )
      }
    }
  }
}
