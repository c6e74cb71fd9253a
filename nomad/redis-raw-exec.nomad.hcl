# The same Redis group with the raw_exec driver: the consul-leader binary and
# redis-server from the host. This is the job the end-to-end test runs on a
# real Nomad agent (test/integration/nomad.test.ts).
#
# Its secrets come from a Nomad variable, put once before the first run:
#
#   nomad var put nomad/jobs/redis redis_password=$(openssl rand -hex 24) status_token=$(openssl rand -hex 24)
#   nomad job run -var consul_leader=/usr/local/bin/consul-leader nomad/redis-raw-exec.nomad.hcl
#
# The tasks render them into files in their secrets/ directory (mode 0400):
# the Redis password into redis.conf and a file the sidecar reads, the status
# server's token into a file the sidecar reads. None reaches a command line
# or an environment. Until the variable exists the tasks wait for it (the
# allocation shows "Missing: nomad.var.block(nomad/jobs/redis...)").

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
      # The password its Redis requires, and the token POST /switchover requires.
      template {
        destination = "${NOMAD_SECRETS_DIR}/redis-password"
        perms       = "0400"
        change_mode = "restart"
        data        = "{{ with nomadVar \"nomad/jobs/redis\" }}{{ .redis_password }}{{ end }}"
      }
      template {
        destination = "${NOMAD_SECRETS_DIR}/status-token"
        perms       = "0400"
        change_mode = "restart"
        data        = "{{ with nomadVar \"nomad/jobs/redis\" }}{{ .status_token }}{{ end }}"
      }
      env {
        CONSUL_HTTP_ADDR                  = var.consul_http_addr
        CONSUL_LEADER_SERVICE_NAME        = var.service_name
        CONSUL_LEADER_REPLICA_LABEL       = "replica"
        CONSUL_LEADER_REDIS_ADDR          = "${NOMAD_ADDR_db}"
        CONSUL_LEADER_ANNOUNCE_ADDR       = "${NOMAD_ADDR_db}"
        CONSUL_LEADER_REDIS_PASSWORD_FILE = "${NOMAD_SECRETS_DIR}/redis-password"
        # The allocation's address, not 0.0.0.0: the status server is reachable
        # where Nomad's checks look for it and nowhere else on the client.
        CONSUL_LEADER_HTTP_ADDR       = "${NOMAD_ADDR_leader}"
        CONSUL_LEADER_HTTP_TOKEN_FILE = "${NOMAD_SECRETS_DIR}/status-token"
        CONSUL_LEADER_LOG_LEVEL       = "info"
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
      # The whole configuration in a file, so the password is on no command
      # line (ps, /proc/<pid>/cmdline). Boot as a replica of nothing: a
      # restarted Redis takes no write before its sidecar has looked at the
      # lock (README, "Recommended Redis settings").
      template {
        destination = "${NOMAD_SECRETS_DIR}/redis.conf"
        perms       = "0400"
        change_mode = "restart"
        data        = <<-EOT
          port {{ env "NOMAD_PORT_db" }}
          bind {{ env "NOMAD_IP_db" }}
          dir {{ env "NOMAD_TASK_DIR" }}
          replicaof 127.0.0.1 1
          save ""
          appendonly no
          {{ with nomadVar "nomad/jobs/redis" }}requirepass {{ .redis_password }}
          masterauth {{ .redis_password }}{{ end }}
        EOT
      }
      config {
        command = var.redis_server
        args    = ["${NOMAD_SECRETS_DIR}/redis.conf"]
      }
    }
  }
}
