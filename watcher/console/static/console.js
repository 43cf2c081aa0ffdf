// Live updates by polling: an element with data-refresh="URL" gets its contents
// replaced by the server-rendered fragment at URL every data-every seconds; an
// <img data-refresh-img="URL"> reloads. Keys j/k move between alerts.
"use strict";
(function () {
  function every(el, fallback) {
    var s = parseFloat(el.getAttribute("data-every"));
    return (isFinite(s) && s > 0 ? s : fallback) * 1000;
  }
  function refreshBlock(el) {
    var url = el.getAttribute("data-refresh");
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden) return;
      if (el.contains(document.activeElement) && document.activeElement.tagName !== "A") return;
      busy = true;
      fetch(url, {credentials: "same-origin", headers: {"Accept": "text/html"}})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html === null) return;
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.body;
          if (el.innerHTML !== fresh.innerHTML) el.innerHTML = fresh.innerHTML;
          var state = el.querySelector(".clip-state");
          if (state && state.textContent.trim() === "ready" && !document.getElementById("clip")) {
            location.reload();
          }
        })
        .catch(function () {})
        .finally(function () { busy = false; });
    }, every(el, 3));
  }
  function refreshImage(img) {
    var base = img.getAttribute("data-refresh-img");
    var n = 0;
    setInterval(function () {
      if (document.hidden) return;
      var next = new Image();
      next.onload = function () { img.src = next.src; };
      next.src = base + (base.indexOf("?") < 0 ? "?" : "&") + "n=" + (++n) + "-" + Date.now();
    }, every(img, 1));
  }
  function rememberName() {
    var saved = localStorage.getItem("watcher.name") || "";
    document.querySelectorAll("input.who").forEach(function (input) {
      if (!input.value) input.value = saved;
      input.addEventListener("change", function () {
        localStorage.setItem("watcher.name", input.value.trim());
      });
    });
  }
  function keys() {
    document.addEventListener("keydown", function (ev) {
      var t = ev.target;
      if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
      if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) return;
      if (ev.key !== "j" && ev.key !== "k") return;
      var links = Array.prototype.slice.call(document.querySelectorAll(".timeline a.open"));
      if (!links.length) return;
      var i = links.indexOf(document.activeElement);
      i = ev.key === "j" ? Math.min(links.length - 1, i + 1) : Math.max(0, i - 1);
      links[i].focus();
      ev.preventDefault();
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(refreshBlock);
    document.querySelectorAll("img[data-refresh-img]").forEach(refreshImage);
    rememberName();
    keys();
  });
})();
