// onechance callback page: reload every data-refresh seconds, but not while someone types into a form
// (a field has the focus, or was typed into in the last two minutes).  Without JavaScript the <noscript>
// meta refresh reloads the page on the same schedule.
(function () {
  var body = document.body, every = parseInt(body.getAttribute("data-refresh"), 10) * 1000;
  if (!every) { return; }
  var typed = 0;
  document.addEventListener("input", function () { typed = Date.now(); });
  function busy() {
    var el = document.activeElement;
    return Date.now() - typed < 120000 || (el && /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName));
  }
  function tick() {
    if (busy()) { setTimeout(tick, every); return; }
    window.location.replace(body.getAttribute("data-url") || "/callbacks");
  }
  setTimeout(tick, every);
}());
