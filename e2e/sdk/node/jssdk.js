// The real wechat-jssdk client, pointed at wxproxy as its WeChat API base:
// it fetches a token (wxproxy answers a placeholder), then the jsapi ticket
// with it (wxproxy answers its held ticket), then signs a page URL.
// wechat-jssdk takes its endpoints as options (accessTokenUrl, ticketUrl);
// that is how it is pointed at wxproxy, as a user would.
//
// Usage: node jssdk.js   with WXPROXY_URL, WX_APPID, PAGE_URL and STORE_FILE
// in the environment. Prints one JSON line: the signature as the SDK made it.
'use strict';

const { JSSDK, FileStore } = require('wechat-jssdk');

const base = process.env.WXPROXY_URL;
const sdk = new JSSDK({
  appId: process.env.WX_APPID,
  appSecret: 'not-the-secret', // wxproxy holds the real one; this never leaves the caller's network
  accessTokenUrl: base + '/cgi-bin/token',
  ticketUrl: base + '/cgi-bin/ticket/getticket',
  store: new FileStore({ fileStorePath: process.env.STORE_FILE }),
});

sdk
  .getSignature(process.env.PAGE_URL)
  .then(sig => {
    process.stdout.write(JSON.stringify(sig) + '\n');
    process.exit(0);
  })
  .catch(err => {
    process.stderr.write('wechat-jssdk failed: ' + JSON.stringify(err && (err.message || err)) + '\n');
    process.exit(1);
  });
