/* Times in the viewer's own time zone, on the dashboard and in the admin (long_time_task/timezones.py).
   Stores the browser's zone in the ltt_tz cookie, so that the server renders the next pages in it, and
   redraws this page's <time data-local> elements in it now: 2025-01-05 23:33:00 UTC+08:00, the same text
   as the server's. */
(function () {
  "use strict";
  var zone = "";
  try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { /* old browser */ }
  if (zone && document.cookie.indexOf("ltt_tz=" + encodeURIComponent(zone)) === -1) {
    document.cookie = "ltt_tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; SameSite=Lax";
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function format(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) { return iso; }
    var offset = -d.getTimezoneOffset(), label = "UTC";
    if (offset) {
      var a = Math.abs(offset);
      label += (offset > 0 ? "+" : "-") + pad(Math.floor(a / 60)) + ":" + pad(a % 60);
    }
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + " " + label;
  }
  function redraw(root) {
    (root || document).querySelectorAll("time[data-local]").forEach(function (el) {
      el.textContent = format(el.getAttribute("datetime"));
    });
  }

  window.lttTime = { format: format, redraw: redraw };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { redraw(document); });
  } else {
    redraw(document);
  }
})();
