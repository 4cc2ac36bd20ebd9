/// What `torpor serve --example-config` prints: a complete configuration with every section, commented, that parses
/// as it is (a test holds it to that). docs/gateway-config.md documents every key.
enum ExampleConfiguration {
    static let yaml = """
        # torpor serve --config torpor.yaml   (only `models` is required; sizes are GiB)
        listen:
          client: 0.0.0.0:8080          # the OpenAI-compatible API
          admin: 127.0.0.1:8081         # the admin API and page: keep it on loopback
        # admin_token: ...              # or TORPOR_ADMIN_TOKEN; without either one is generated and printed once
        # metrics_token: ...            # a read-only token for /metrics (or TORPOR_METRICS_TOKEN)
        # api_keys:                     # none: the client API is open
        #   - {name: team-a, key_env: TEAM_A_KEY, models: [qwen3-8b]}
        limits:
          queue_depth: 256              # requests waiting for one model beyond this get 429
          queue_timeout_seconds: 120    # a request waits at most this long for its model, then 503
          shutdown_grace_seconds: 30    # at SIGTERM, requests in flight get this long to finish
        scheduler:
          min_residency_seconds: 5      # a model just woken is not put to sleep for another one before this
          transition_timeout_seconds: 300  # a sleep, wake or reload longer than this restarts the engine
        host_memory_gib: 64             # host RAM for level-1 sleepers' weights and host-cache checkpoints
        state_dir: /var/lib/torpor      # engine sockets, records and logs
        gpus:
          - {id: "0", memory_gib: 78}   # what the models on this GPU may use
        models:
          - name: qwen3-8b
            aliases: [default]          # other names clients may send
            preload: true               # awake after start (otherwise started, then put to sleep)
            engine:
              command: [vllm, serve, /models/Qwen3-8B, --enable-sleep-mode, --gpu-memory-utilization, "0.45"]
            weights_gib: 16.4           # GPU memory of the weights (host RAM at level 1)
            kv_cache_gib: 18            # GPU memory of the KV cache
          - name: llama-3.1-8b
            idle_ttl_seconds: 600       # put to sleep after 10 minutes without requests
            sleep_level: auto           # auto, 1, 2, or host-cache (needs checkpoint: a `torpor pack` directory)
            engine:
              command: [vllm, serve, /models/Llama-3.1-8B-Instruct, --enable-sleep-mode, --gpu-memory-utilization, "0.45"]
            weights_gib: 16.1
            kv_cache_gib: 18

        """
}
