// Live updates: a page with a [data-live="log"] or [data-live="queue"]
// element (or several kinds: [data-live="queue alerts"]) listens to
// /events and, at each change of one of its kinds, fetches itself again
// and swaps that element for the new one. No inline script.
(function () {
  "use strict";
  var live = document.querySelector("[data-live]");
  if (!live || !window.EventSource || !window.fetch) {
    return;
  }
  var kind = live.getAttribute("data-live");
  var busy = false;
  var again = false;
  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (answer) {
        if (!answer.ok || answer.redirected) {
          throw new Error("not refreshed");
        }
        return answer.text();
      })
      .then(function (html) {
        var page = new DOMParser().parseFromString(html, "text/html");
        var fresh = page.querySelector('[data-live="' + kind + '"]');
        if (fresh) {
          live.replaceWith(fresh);
          live = fresh;
        }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }
  var source = new EventSource("/events");
  kind.split(" ").forEach(function (one) {
    source.addEventListener(one, refresh);
  });
})();
