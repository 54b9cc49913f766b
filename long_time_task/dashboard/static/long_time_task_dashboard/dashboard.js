/* The task dashboard's script: live updates from the API's Server-Sent Events (polling when they fail),
   a type picker that needs no button, a dialog before a delete, and the new schedule form's live preview.
   Every page works without it. */
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  var strings = {};
  try { strings = JSON.parse(document.getElementById("ltt-strings").textContent); } catch (e) { /* none */ }

  // Times: long_time_task/timezone.js (loaded first) draws them in the viewer's zone.
  var times = window.lttTime || { format: function (iso) { return iso; }, redraw: function () {} };
  function formatTime(iso) { return times.format(iso); }
  function localTimes(root) { times.redraw(root); }
  function timeHtml(iso) {
    if (!iso) { return "–"; }
    var t = document.createElement("time");
    t.setAttribute("datetime", iso);
    t.setAttribute("data-local", "");
    t.textContent = formatTime(iso);
    return t.outerHTML;
  }
  function seconds(value) {
    if (value === null || value === undefined) { return "–"; }
    if (value < 10) { return value.toFixed(1) + " s"; }
    var total = Math.round(value), h = Math.floor(total / 3600), m = Math.floor(total % 3600 / 60), s = total % 60;
    if (h) { return h + " h " + m + " min"; }
    if (m) { return m + " min " + s + " s"; }
    return s + " s";
  }

  // The new schedule form: only the chosen timing's field shows, and the next runs of the timing, in the
  // schedule's zone, are asked of the server (schedules/preview/) as it is typed; an error shows on its field.
  function scheduleTiming(form) {
    var box = form.querySelector("[data-preview]");
    var list = box.querySelector("[data-preview-runs]");
    var message = box.querySelector("[data-preview-message]");
    var zoneLabel = box.querySelector("[data-preview-zone]");
    var url = form.getAttribute("data-preview-url");
    var watched = ["cron", "interval_seconds", "run_at", "timezone"];
    var timer = null, asked = 0;

    function kind() {
      var checked = form.querySelector("input[data-timing]:checked");
      return checked ? checked.value : "cron";
    }
    function showKind() {
      var chosen = kind();
      form.querySelectorAll("[data-timing-field]").forEach(function (field) {
        field.hidden = field.getAttribute("data-timing-field") !== chosen;
      });
    }
    function showErrors(data) {
      form.querySelectorAll("[data-error-for]").forEach(function (el) {
        var name = el.getAttribute("data-error-for"), wrong = Boolean(data.error) && data.field === name;
        el.textContent = wrong ? data.error : "";
        el.hidden = !wrong;
        var field = el.closest(".field"), input = form.elements[name];
        if (field) { field.classList.toggle("has-error", wrong); }
        if (input && wrong) { input.setAttribute("aria-invalid", "true"); } else if (input) { input.removeAttribute("aria-invalid"); }
      });
    }
    function show(data) {
      showErrors(data);
      list.textContent = "";
      if (data.error) {
        var onField = form.querySelector('[data-error-for="' + data.field + '"]');
        message.textContent = onField ? box.getAttribute("data-hint") : data.error;
        return;
      }
      zoneLabel.textContent = data.timezone;
      data.shown.forEach(function (text, i) {
        var item = document.createElement("li"), time = document.createElement("time");
        time.setAttribute("datetime", data.runs[i]);  // no data-local: these read in the schedule's zone
        time.textContent = text;
        item.appendChild(time);
        list.appendChild(item);
      });
      message.textContent = data.runs.length ? "" : box.getAttribute("data-no-run");
    }
    function ask() {
      window.clearTimeout(timer);
      var chosen = kind(), input = form.elements[chosen], value = input ? input.value.trim() : "";
      var mine = ++asked;
      if (!value) { list.textContent = ""; message.textContent = box.getAttribute("data-empty"); return; }
      var query = new URLSearchParams();
      query.set(chosen, value);
      query.set("timezone", form.elements.timezone.value.trim());
      fetch(url + "?" + query.toString(), { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (data) { if (data && mine === asked) { show(data); } })  // only the newest answer counts
        .catch(function () { /* the next keystroke asks again; Preview still works */ });
    }
    form.addEventListener("input", function (event) {
      if (watched.indexOf(event.target.name) !== -1) {
        window.clearTimeout(timer);
        timer = window.setTimeout(ask, 300);
      }
    });
    form.addEventListener("change", function (event) {
      if (event.target.hasAttribute("data-timing")) { showKind(); ask(); }
    });
    showKind();
    ask();
  }

  // The type picker: choosing a type shows its form.
  document.querySelectorAll("form[data-autosubmit] select").forEach(function (select) {
    select.addEventListener("change", function () { if (select.value) { select.form.submit(); } });
  });

  // Forms that ask first (deleting a schedule): a yes in the dialog tells the server so; without the script
  // the server asks on a page of its own.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); return; }
      var confirmed = form.querySelector('input[name="confirmed"]');
      if (confirmed) { confirmed.value = "yes"; }
    });
  });

  var scheduleForm = document.querySelector("form[data-schedule-form]");
  if (scheduleForm) { scheduleTiming(scheduleForm); }

  var root = document.querySelector("[data-live]");
  if (!root) { return; }
  var detail = root.hasAttribute("data-detail");
  var status = document.querySelector("[data-live-status]");
  function setStatus(text) { if (status) { status.textContent = text ? "· " + text : ""; } }

  function applyTask(task) {
    document.querySelectorAll('[data-task-id="' + task.id + '"]').forEach(function (el) {
      var previous = el.getAttribute("data-state");
      el.setAttribute("data-state", task.state);
      var state = el.querySelector('[data-field="state"]');
      if (state) { state.textContent = task.state_display; state.className = "state state-" + task.state; }
      var cancel = el.querySelector('[data-field="cancel"]');
      if (task.cancel_requested && !task.terminal && !cancel && state) {
        state.insertAdjacentHTML("afterend", ' <span class="note" data-field="cancel"></span>');
        el.querySelector('[data-field="cancel"]').textContent = "(" + strings.cancelRequested + ")";
      } else if (cancel && task.terminal) { cancel.remove(); }
      var percent = task.progress && task.progress.percent !== null ? task.progress.percent : (task.state === "FINISHED" ? 100 : null);
      var bar = el.querySelector('[data-field="progress"] progress');
      // No figure reported: an indeterminate bar while it runs, an empty one otherwise.
      if (bar) {
        if (percent !== null) { bar.value = percent; } else if (task.state === "RUNNING") { bar.removeAttribute("value"); } else { bar.value = 0; }
      }
      var pct = el.querySelector('[data-field="percent"]');
      if (pct) { pct.textContent = percent === null ? "" : Math.round(percent) + "%"; }
      var message = el.querySelector('[data-field="message"]');
      if (message) { message.textContent = task.progress ? task.progress.message : ""; }
      ["start_at", "finish_at"].forEach(function (name) {
        var cell = el.querySelector('[data-field="' + name + '"]');
        if (cell) { cell.innerHTML = timeHtml(task[name]); }
      });
      var duration = el.querySelector('[data-field="duration"]');
      if (duration && task.finish_at) { duration.textContent = seconds(task.duration); }
      var attempts = el.querySelector('[data-field="attempts"]');
      if (attempts) { attempts.textContent = task.attempts; }
      if (detail && previous !== task.state) { refresh(); }
    });
  }

  // The detail page: a state change brings new sections (result, error, buttons): fetch the page again and
  // swap the live part in place, keeping the focus where it was.
  var refreshing = null;
  function refresh() {
    if (refreshing) { return refreshing; }
    refreshing = fetch(window.location.href, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-live]");
        var current = document.querySelector("[data-live]");
        if (!fresh || !current) { return; }
        var focused = document.activeElement && document.activeElement.id;
        current.replaceWith(fresh);
        if (!fresh.hasAttribute("data-events-url")) { dropStaleMessages(); }
        localTimes(fresh);
        status = document.querySelector("[data-live-status]");
        setStatus(source ? strings.live : (pollTimer ? strings.polling : ""));
        if (focused && document.getElementById(focused)) { document.getElementById(focused).focus(); }
      })
      .catch(function () { /* the next event or poll tries again */ })
      .then(function () { refreshing = null; });
    return refreshing;
  }

  // A note that is true only while the task runs ("it has been asked to stop") goes once the task has ended.
  function dropStaleMessages() {
    document.querySelectorAll(".messages [data-until-ended]").forEach(function (item) {
      var list = item.parentNode;
      item.remove();
      if (list && !list.children.length) { list.remove(); }
    });
  }

  // Polling: the fallback when EventSource is missing or the stream is refused (429 when the server serves
  // no more streams or at the user's cap, 503 when it serves none; EventSource cannot tell which, nor read Retry-After).
  var pollTimer = null;
  function poll() {
    if (pollTimer) { return; }
    setStatus(strings.polling);
    pollTimer = window.setInterval(function () {
      if (document.hidden) { return; }
      var live = document.querySelector("[data-live]");
      if (detail && live && !live.hasAttribute("data-events-url")) { stopPolling(); setStatus(""); return; }
      refresh();
    }, 3000);
  }
  function stopPolling() {
    if (pollTimer) { window.clearInterval(pollTimer); pollTimer = null; }
  }

  var source = null;
  if (!root.getAttribute("data-events-url")) { return; }
  if (!window.EventSource) { poll(); return; }
  // A refused stream is asked for again while the page polls, less often each time (3 s, the server's
  // Retry-After, then 6, 12, … up to 2 min): the previous page's stream is given back within about 2 s,
  // and another one when its page closes.
  var retryDelay = 3000;
  function listen() {
    var live = document.querySelector("[data-live]");
    var url = live && live.getAttribute("data-events-url");
    if (!url) { return; }  // the task finished meanwhile
    var stream = source = new EventSource(url, { withCredentials: true });
    stream.addEventListener("open", function () { stopPolling(); retryDelay = 3000; setStatus(strings.live); });
    stream.addEventListener("task", function (event) { applyTask(JSON.parse(event.data)); });
    stream.addEventListener("end", function () {
      stream.close();
      source = null;
      setStatus("");
      if (detail) { refresh(); }
    });
    stream.addEventListener("created", function () {
      var notice = document.querySelector("[data-new-tasks]");
      if (!notice || !notice.hidden) { return; }
      notice.textContent = strings.newTasks + " ";
      var link = document.createElement("a");
      link.href = window.location.pathname + window.location.search;
      link.textContent = strings.show;
      notice.appendChild(link);
      notice.hidden = false;
    });
    stream.addEventListener("error", function () {
      // A stream that ends is reopened by the browser; one that cannot be opened (an HTTP error) is CLOSED.
      if (stream.readyState === EventSource.CLOSED) {
        source = null;
        poll();
        window.setTimeout(listen, retryDelay);
        retryDelay = Math.min(retryDelay * 2, 120000);
      }
    });
  }
  listen();
})();
