# A Redis group kept by consul-leader, with the docker driver: each allocation
# runs redis and a consul-leader sidecar (the image from this repo's
# Dockerfile). Clients find the writer as the passing instance of "redis"
# tagged "primary", or simply as "redis-primary" (passing only on the leader).
#
# Its secrets come from a Nomad variable, put once before the first run:
#
#   nomad var put nomad/jobs/redis redis_password=$(openssl rand -hex 24) status_token=$(openssl rand -hex 24)
#   nomad job run -var count=3 nomad/redis.nomad.hcl
#
# The tasks render them into files in their secrets/ directory (mode 0400):
# the Redis password into redis.conf and a file the sidecar reads, the status
# server's token into a file the sidecar reads. None reaches a command line
# or an environment. Until the variable exists the tasks wait for it.

variable "count" {
  description = "Number of Redis instances (one primary, the rest replicas)."
  type        = number
  default     = 3
}

variable "image" {
  description = "The consul-leader image."
  type        = string
  default     = "consul-leader:0.1.0"
}

variable "redis_image" {
  description = "The Redis image (6.2 or newer)."
  type        = string
  default     = "redis:7.2-alpine"
}

variable "consul_http_addr" {
  description = "The local Consul agent, as seen from the tasks; empty: port 8500 on the client's address."
  type        = string
  default     = ""
}

job "redis" {
  type = "service"

  group "redis" {
    count = var.count

    network {
      port "db" {}
      port "leader" {}
    }

    # Tagged primary/replica by the sidecar. enable_tag_override keeps Nomad's
    # sync from removing the role tags (the sidecar puts them back anyway).
    service {
      name                = "redis"
      port                = "db"
      provider            = "consul"
      enable_tag_override = true
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

    # Passing only on the instance that holds the lock and whose Redis is primary.
    service {
      name     = "redis-primary"
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
      driver = "docker"
      config {
        image = var.image
        ports = ["leader"]
      }
      # The password its Redis requires, and the token POST /switchover requires.
      template {
        destination = "${NOMAD_SECRETS_DIR}/redis-password"
        perms       = "0400"
        uid         = 10001 # the image's consul-leader user
        gid         = 10001
        change_mode = "restart"
        data        = "{{ with nomadVar \"nomad/jobs/redis\" }}{{ .redis_password }}{{ end }}"
      }
      template {
        destination = "${NOMAD_SECRETS_DIR}/status-token"
        perms       = "0400"
        uid         = 10001
        gid         = 10001
        change_mode = "restart"
        data        = "{{ with nomadVar \"nomad/jobs/redis\" }}{{ .status_token }}{{ end }}"
      }
      env {
        CONSUL_HTTP_ADDR                  = var.consul_http_addr != "" ? var.consul_http_addr : "http://${attr.unique.network.ip-address}:8500"
        CONSUL_LEADER_SERVICE_NAME        = "redis"
        CONSUL_LEADER_REPLICA_LABEL       = "replica"
        CONSUL_LEADER_REDIS_ADDR          = "${NOMAD_ADDR_db}"
        CONSUL_LEADER_ANNOUNCE_ADDR       = "${NOMAD_ADDR_db}"
        CONSUL_LEADER_REDIS_PASSWORD_FILE = "${NOMAD_SECRETS_DIR}/redis-password"
        # Every address inside the container: Docker publishes the port only on
        # the allocation's address (the "leader" port mapping), where Nomad's
        # checks look for it; the client's other addresses do not reach it.
        CONSUL_LEADER_HTTP_ADDR       = "0.0.0.0:${NOMAD_PORT_leader}"
        CONSUL_LEADER_HTTP_TOKEN_FILE = "${NOMAD_SECRETS_DIR}/status-token"
        CONSUL_LEADER_LOG_LEVEL       = "info"
      }
      # The docker driver makes memory a hard limit, and an out-of-memory kill
      # of the leader's sidecar is a failover. A sidecar with its status
      # server polled as below, ~100 writes/s and a switchover every 5 min
      # measured 63.9 MiB at its peak (RSS, 58-60 MiB steady) over 32 minutes;
      # 128 leaves it room to grow.
      resources {
        cpu    = 50
        memory = 128
      }
    }

    task "redis" {
      driver = "docker"
      # The whole configuration in a file, so the password is on no command
      # line (ps, docker inspect). Boot as a replica of nothing: a restarted
      # Redis takes no write before its sidecar has looked at the lock
      # (README, "Recommended Redis settings").
      template {
        destination = "${NOMAD_SECRETS_DIR}/redis.conf"
        perms       = "0400"
        uid         = 999 # the redis user the official image drops to
        gid         = 1000
        change_mode = "restart"
        data        = <<-EOT
          port {{ env "NOMAD_PORT_db" }}
          replicaof 127.0.0.1 1
          save ""
          appendonly no
          {{ with nomadVar "nomad/jobs/redis" }}requirepass {{ .redis_password }}
          masterauth {{ .redis_password }}{{ end }}
        EOT
      }
      config {
        image = var.redis_image
        ports = ["db"]
        args  = ["redis-server", "${NOMAD_SECRETS_DIR}/redis.conf"]
      }
      resources {
        cpu    = 200
        memory = 256
      }
    }
  }
}
