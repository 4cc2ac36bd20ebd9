/// The admin listener's web page at `/`: one HTML document with its script and style inline (no build step, no
/// external assets). After a login form (the admin token, kept in an HttpOnly, SameSite=Strict cookie) it shows
/// every model with its state, level, memory and queue, the GPU ledgers, the live transition events, an engine's
/// log tail, and buttons for sleep, wake, switch and GPU leases — all through the admin API itself.
enum AdminPage {
    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Torpor admin</title>
        <style>
          body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d1d1f; }
          h1 { font-size: 1.3rem; } h2 { font-size: 1.05rem; margin-top: 1.6rem; }
          table { border-collapse: collapse; } th, td { padding: .3rem .7rem; text-align: left; border-bottom: 1px solid #ddd; }
          td.num { text-align: right; font-variant-numeric: tabular-nums; }
          .state { font-weight: 600; } .awake { color: #1a7f37; } .L1, .L2 { color: #57606a; }
          .failed { color: #cf222e; } .waking, .starting, .sleeping, .draining, .reloading { color: #9a6700; }
          button { margin-right: .3rem; } #events { max-height: 16rem; overflow: auto; font: 12px monospace; }
          pre { background: #f6f8fa; padding: .6rem; max-height: 20rem; overflow: auto; font-size: 12px; }
          #login { max-width: 28rem; } #login input { width: 100%; padding: .4rem; margin: .4rem 0; }
          .error { color: #cf222e; } [hidden] { display: none; }
        </style>
        </head>
        <body>
        <h1>Torpor admin</h1>
        <form id="login" hidden>
          <p>The admin token (<code>admin_token</code>, <code>TORPOR_ADMIN_TOKEN</code>, or the one
          <code>torpor serve</code> printed):</p>
          <input id="token" type="password" autocomplete="current-password" required>
          <button type="submit">Log in</button>
          <p id="login-error" class="error" hidden>That token was refused.</p>
        </form>
        <main id="main" hidden>
          <h2>Models</h2>
          <table id="models"><thead><tr>
            <th>model</th><th>state</th><th>GPU</th><th>in flight</th><th>queued</th><th>GPU GiB</th>
            <th>host GiB</th><th>req/s</th><th>pid</th><th>aliases</th><th></th></tr></thead><tbody></tbody></table>
          <p>Switch: <select id="switch-to"></select> from <select id="switch-from"><option value="">(any)</option>
          </select> <button id="switch">switch</button> <span id="action-status"></span></p>
          <h2>GPUs</h2>
          <table id="gpus"><thead><tr><th>GPU</th><th>awake GiB</th><th>asleep GiB</th><th>free GiB</th>
            <th>capacity GiB</th><th>lease</th><th>transition</th><th></th></tr></thead><tbody></tbody></table>
          <h2>Transitions <small>(live)</small></h2>
          <ol id="events" reversed></ol>
          <h2>Engine log <small id="log-model"></small></h2>
          <pre id="log">Choose "log" on a model.</pre>
          <p><button id="logout">log out</button></p>
        </main>
        <script>
        "use strict";
        const $ = (id) => document.getElementById(id);
        const gib = (bytes) => (bytes / 2 ** 30).toFixed(1);
        let source = null;

        async function api(method, path) {
          const response = await fetch(path, { method, headers: { "X-Torpor-Admin": "1" }, credentials: "same-origin" });
          if (response.status === 401) { showLogin(); throw new Error("unauthorized"); }
          const text = await response.text();
          if (!response.ok) {
            let message = text;
            try { message = JSON.parse(text).error.message; } catch (_) {}
            throw new Error(message);
          }
          return text;
        }

        function cell(row, text, className) {
          const td = row.insertCell(); td.textContent = text; if (className) td.className = className; return td;
        }

        function button(td, label, action) {
          const b = document.createElement("button"); b.textContent = label; b.dataset.action = label;
          b.addEventListener("click", () => run(action)); td.appendChild(b);
        }

        async function run(action) {
          $("action-status").textContent = "…";
          try { await action(); $("action-status").textContent = ""; }
          catch (error) { $("action-status").textContent = error.message; $("action-status").className = "error"; }
          refresh();
        }

        async function refresh() {
          let data;
          try { data = JSON.parse(await api("GET", "/admin/models")); } catch (_) { return; }
          const body = $("models").tBodies[0]; body.replaceChildren();
          const names = data.models.map((m) => m.name);
          for (const model of data.models) {
            const row = body.insertRow(); row.dataset.model = model.name;
            cell(row, model.name);
            cell(row, model.state, "state " + model.state).title = model.last_error || "";
            cell(row, model.gpu);
            cell(row, model.in_flight, "num"); cell(row, model.queued, "num");
            cell(row, gib(model.gpu_bytes), "num"); cell(row, gib(model.host_bytes), "num");
            cell(row, model.requests_per_second.toFixed(2), "num");
            cell(row, model.engine_pid ?? "–", "num");
            cell(row, (model.aliases || []).join(", "));
            const actions = row.insertCell();
            const path = "/admin/models/" + encodeURIComponent(model.name);
            button(actions, "wake", () => api("POST", path + "/wake"));
            button(actions, "sleep 1", () => api("POST", path + "/sleep?level=1"));
            button(actions, "sleep 2", () => api("POST", path + "/sleep?level=2"));
            button(actions, "log", () => showLog(model.name));
          }
          for (const select of [$("switch-to"), $("switch-from")]) {
            const keep = select.value;
            for (const option of [...select.options]) if (option.value) option.remove();
            for (const name of names) select.add(new Option(name, name));
            if (names.includes(keep)) select.value = keep;
          }
          const gpus = $("gpus").tBodies[0]; gpus.replaceChildren();
          for (const gpu of data.gpus) {
            const row = gpus.insertRow(); row.dataset.gpu = gpu.gpu;
            cell(row, gpu.gpu); cell(row, gib(gpu.awake_bytes), "num"); cell(row, gib(gpu.residue_bytes), "num");
            cell(row, gib(gpu.free_bytes), "num"); cell(row, gib(gpu.capacity_bytes), "num");
            cell(row, gpu.lease || "–"); cell(row, gpu.transition || "–");
            const actions = row.insertCell();
            const path = "/admin/gpus/" + encodeURIComponent(gpu.gpu) + "/lease";
            if (gpu.lease) button(actions, "release", () => api("DELETE", path));
            else button(actions, "lease", () => api("POST", path + "?mode=queue"));
          }
        }

        async function showLog(name) {
          $("log-model").textContent = "(" + name + ")";
          try { $("log").textContent = await api("GET", "/admin/models/" + encodeURIComponent(name) + "/logs?lines=100"); }
          catch (error) { $("log").textContent = error.message; }
        }

        function follow() {
          if (source) source.close();
          source = new EventSource("/admin/events?replay=1");
          source.addEventListener("transition", (message) => {
            const event = JSON.parse(message.data);
            const item = document.createElement("li");
            const when = new Date(event.time * 1000).toLocaleTimeString();
            const took = event.duration_seconds != null ? " in " + event.duration_seconds.toFixed(2) + " s" : "";
            item.textContent = when + "  " + event.kind + " " + event.model + ": " + event.from + " → " + event.to +
              took + (event.reason ? " (" + event.reason + ")" : "");
            item.dataset.kind = event.kind; item.dataset.model = event.model;
            $("events").prepend(item);
            refresh();
          });
        }

        function showLogin() { $("main").hidden = true; $("login").hidden = false; if (source) source.close(); }

        async function start() {
          const response = await fetch("/admin/models", { credentials: "same-origin" });
          if (response.status === 401) { showLogin(); return; }
          $("login").hidden = true; $("main").hidden = false;
          await refresh(); follow();
        }

        $("login").addEventListener("submit", async (event) => {
          event.preventDefault();
          const response = await fetch("/login", {
            method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/x-www-form-urlencoded" },
            body: "token=" + encodeURIComponent($("token").value) });
          $("login-error").hidden = response.ok;
          if (response.ok) { $("token").value = ""; start(); }
        });
        $("switch").addEventListener("click", () => run(() => {
          const from = $("switch-from").value;
          return api("POST", "/admin/switch?to=" + encodeURIComponent($("switch-to").value) +
            (from ? "&from=" + encodeURIComponent(from) : ""));
        }));
        $("logout").addEventListener("click", async () => { await fetch("/logout", { method: "POST" }); showLogin(); });
        setInterval(() => { if (!$("main").hidden) refresh(); }, 2000);
        start();
        </script>
        </body>
        </html>
        """#
}
