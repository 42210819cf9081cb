// The whole flow of the wechat-api SDK (1.35.1) against wxproxy: the SDK
// forces https:// on its endpoint, fetches /cgi-bin/token itself and then
// calls business APIs with the token it got. Run by e2e/resilience_test.go:
//   WXPROXY_HOST=127.0.0.1:PORT APPID=wx... NODE_EXTRA_CA_CERTS=ca.pem node wechat_api_flow.js
// With CLIENT_CERT, CLIENT_KEY and CA_FILE set, the SDK presents that client
// certificate (its caller identity, callers.keys[].cert_cn) and trusts the CA
// through its own request options: setOpts replaces all of the SDK's default
// urllib options, so everything it needs is given here.
'use strict';
const fs = require('fs');
const API = require('wechat-api');

const api = new API(process.env.APPID, 'the-sdk-never-needs-the-real-secret');
api.setEndpoint(process.env.WXPROXY_HOST);
if (process.env.CLIENT_CERT) {
  api.setOpts({
    timeout: 10000,
    cert: fs.readFileSync(process.env.CLIENT_CERT),
    key: fs.readFileSync(process.env.CLIENT_KEY),
    ca: fs.readFileSync(process.env.CA_FILE),
  });
}

const out = {};
function fail(step, err) {
  console.error(JSON.stringify({ step: step, error: String(err && err.message || err), code: err && err.code }));
  process.exit(1);
}

api.getLatestToken(function (err, token) {
  if (err) return fail('token', err);
  out.token = token.accessToken;
  api.getFollowers(function (err, followers) {
    if (err) return fail('getFollowers', err);
    out.followers = followers;
    api.sendText('openid-1', 'hello', function (err, sent) {
      if (err) return fail('sendText', err);
      out.sent = sent;
      console.log(JSON.stringify(out));
    });
  });
});
