// Keeps camera steps current without inline script (the CSP forbids it): poll /live, show
// capture's guidance, and reload when the step changes or a photo is waiting to be checked.
(function () {
  "use strict";
  var area = document.querySelector(".camera");
  if (!area) { return; }
  var url = area.getAttribute("data-live");
  var step = area.getAttribute("data-step");
  var guidance = area.querySelector(".guidance");
  function poll() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (live) {
        if (live.step !== step || live.candidate) { window.location.reload(); return; }
        if (guidance && guidance.textContent !== live.message) { guidance.textContent = live.message; }
        window.setTimeout(poll, 700);
      })
      .catch(function () { window.setTimeout(poll, 2000); });
  }
  window.setTimeout(poll, 700);
})();
