// orch's board: keeps the page current without reloading it. Every second it asks the page's
// live endpoint whether anything changed since the fingerprint it holds; when something did,
// the endpoint answers with the new content of <main>, which replaces the old one. Served by
// orch itself; no framework, no build step.
(function () {
  "use strict";
  var root = document.getElementById("live");
  if (!root || !root.dataset.live || !window.fetch) return;
  var fp = root.dataset.fp || "";
  var busy = false;
  function url() {
    var u = root.dataset.live;
    return u + (u.indexOf("?") < 0 ? "?" : "&") + "fp=" + encodeURIComponent(fp);
  }
  function tick() {
    if (busy || document.hidden) return;
    busy = true;
    fetch(url(), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (j) {
        if (!j || j.fp === fp) return;
        fp = j.fp;
        root.dataset.fp = fp;
        if (typeof j.html === "string") root.innerHTML = j.html;
      })
      .catch(function () { /* the next tick tries again */ })
      .then(function () { busy = false; });
  }
  setInterval(tick, 1000);
  document.addEventListener("visibilitychange", tick);
})();
