// The flow benchmark's peer: the same whole OAuth flow as gitbroker's
// (page -> start -> provider -> callback -> code exchange -> stored -> page)
// with grant, express-session and connect-redis, against the same mock
// provider. `node server.js PORT MOCK_URL REDIS_URL`.
'use strict';
const express = require('express');
const session = require('express-session');
const RedisStore = require('connect-redis').default;
const { createClient } = require('redis');
const grant = require('grant').express();

const [port, mock, redisUrl] = process.argv.slice(2);
const origin = `http://127.0.0.1:${port}`;

(async () => {
  const client = createClient({ url: redisUrl });
  await client.connect();
  const app = express();
  app.use(session({
    store: new RedisStore({ client, prefix: 'peer-sess:' }),
    secret: 'peer-session-secret-0123456789abcdef',
    resave: false,
    saveUninitialized: false,
  }));
  app.use(grant({
    defaults: { origin, transport: 'session', state: true },
    github: {
      key: 'peer-client',
      secret: 'peer-client-secret',
      scope: ['repo'],
      authorize_url: `${mock}/login/oauth/authorize`,
      access_url: `${mock}/login/oauth/access_token`,
      callback: '/done',
    },
  }));
  // sign-in stands for the identity provider: once per client
  app.get('/login', (req, res) => {
    req.session.user = String(req.query.user || '');
    res.send('signed in');
  });
  app.get('/done', async (req, res) => {
    const user = req.session.user;
    const token = req.session.grant && req.session.grant.response && req.session.grant.response.access_token;
    if (!user || !token) return res.status(400).send('no token');
    await client.set(`peer-token:${user}`, token);
    delete req.session.grant;
    res.redirect('/page');
  });
  app.get('/page', async (req, res) => {
    const user = req.session.user;
    if (!user) return res.status(401).send('sign in');
    const token = await client.get(`peer-token:${user}`);
    res.send(`<html><body><h1>Tokens of ${user}</h1><p>${token ? 'token stored' : 'no token'}</p></body></html>`);
  });
  app.listen(Number(port), '127.0.0.1');
})();
