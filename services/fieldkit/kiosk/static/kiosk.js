// Keeps the screen in step with the session on the server, without inline script (the CSP
// forbids it): poll /live, show the camera's words on camera pages, and reload when the step
// changes, a photo is waiting to be checked, the session was ended by the idle timer or the
// operator was logged out. The poll is not operator activity: the timeouts run regardless.
//
// Three more jobs (issue 21):
// - manual entry wins: the ID field tells the server when it has focus or content
//   (data-typing), so a QR read meanwhile is only offered; the offer is shown here;
// - buttons marked data-in-page ("keep typing", "close" the refusal) act without leaving the
//   page, so the digits typed so far stay;
// - a form marked data-wipe ends the session: while its request waits for the wipe's verdict,
//   the page shows how far the wipe has come.
(function () {
  "use strict";
  var url = document.body.getAttribute("data-live");
  if (!url) { return; }
  var step = document.body.getAttribute("data-step") || null;
  var unproven = document.body.getAttribute("data-unproven") === "1";
  var area = document.querySelector(".camera");
  var guidance = area ? area.querySelector(".guidance") : null;
  var offer = document.getElementById("qr-offer");
  var every = area ? 700 : 2000;
  // Once staff press a button (or follow a link) the page is on its way out: a reload now
  // would cancel that request's page, and the next page shows the news anyway.
  var leaving = false;
  var stayUntil = 0;
  // A departure that never happened (a navigation the browser dropped, a request lost under
  // load) must not freeze the screen: past this, the page polls again and follows the session.
  // A request that waits for the wipe's verdict gets longer (the wipe's own time limits).
  function leave(ms) { leaving = true; stayUntil = Math.max(stayUntil, Date.now() + ms); }

  function post(action, data) {
    // redirect "manual": the server's answer is a redirect to the page we stay on; following
    // it would render that page again on the server for nothing (and reset the typing state).
    return fetch(action, {
      method: "POST", body: data, credentials: "same-origin", cache: "no-store",
      redirect: "manual"
    });
  }

  // -- Manual entry: tell the server while the field has focus or content.
  var entry = document.querySelector("input[data-typing]");
  var told = entry ? entry.value !== "" : false;  // the server set it when it drew the page
  function tellTyping(force) {
    if (!entry) { return; }
    var typing = document.activeElement === entry || entry.value !== "";
    if (typing === told && !force) { return; }
    told = typing;
    var data = new FormData();
    data.append("csrf_token", entry.form.elements.csrf_token.value);
    data.append("typing", typing ? "1" : "0");
    post(entry.getAttribute("data-typing"), data).catch(function () { told = !typing; });
  }
  if (entry) {
    ["focus", "input", "blur"].forEach(function (name) {
      entry.addEventListener(name, function () { tellTyping(false); });
    });
  }

  // -- Wipe progress, shown while the request that ends the session waits for the verdict.
  function followWipe(target) {
    if (!target) { return; }
    target.hidden = false;
    function look() {
      fetch(url, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (live) {
          if (live && live.wipe && target.textContent !== live.wipe) { target.textContent = live.wipe; }
          window.setTimeout(look, 400);
        })
        .catch(function () { window.setTimeout(look, 1000); });
    }
    look();
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var by = event.submitter;
    if (leaving) { event.preventDefault(); return; }  // one tap is one request
    if (by && by.hasAttribute("data-in-page")) {
      event.preventDefault();
      var data = new FormData(form);
      if (by.name) { data.append(by.name, by.value); }
      var hide = document.getElementById(by.getAttribute("data-in-page"));
      post(form.action, data).then(function () {
        if (hide) { hide.hidden = true; }
        tellTyping(true);
        if (entry) { entry.focus(); }
      });
      return;
    }
    leave(form.hasAttribute("data-wipe") ? 120000 : 15000);
    if (form.hasAttribute("data-wipe")) {
      followWipe(document.getElementById(form.getAttribute("data-wipe")));
    }
  }, true);
  window.addEventListener("beforeunload", function () { leave(15000); });

  function reload() { if (!leaving) { window.location.reload(); } }
  function poll() {
    if (leaving && Date.now() < stayUntil) { window.setTimeout(poll, every); return; }
    leaving = false;
    // A request the server never answers must not stop the page following the session.
    var ask = new AbortController();
    var limit = window.setTimeout(function () { ask.abort(); }, 10000);
    fetch(url, { credentials: "same-origin", cache: "no-store", signal: ask.signal })
      .then(function (r) {
        if (!r.ok || r.redirected) { reload(); return null; }
        return r.json();
      })
      .then(function (live) {
        window.clearTimeout(limit);
        if (live !== null) {
          var moved = live.step !== step || live.unproven !== unproven;
          if (moved || (area && live.candidate)) {
            reload();
          } else {
            if (guidance && guidance.textContent !== live.message) { guidance.textContent = live.message; }
            if (offer && offer.hidden === live.offer) { offer.hidden = !live.offer; }
          }
        }
        // Also after a reload: if its navigation never happens, the next round tries again.
        window.setTimeout(poll, every);
      })
      .catch(function () { window.clearTimeout(limit); window.setTimeout(poll, 2000); });
  }
  window.setTimeout(poll, every);
})();
