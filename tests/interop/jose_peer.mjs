// The npm `jose` package as an independent JOSE implementation for test_jose_interop.sh: it
// checks what fhirsync produces (JWK Sets, kids, JWS signatures, PKCS#8 keys) and produces what
// fhirsync must accept (JWS signed by jose, private JWKs exported by jose). Test-only peer.
//
// usage:
//   node jose_peer.mjs verify JWKS_FILE JWT ALG        jwtVerify with the key set, alg pinned
//   node jose_peer.mjs reject JWKS_FILE JWT ALG        succeeds only if verification fails
//   node jose_peer.mjs thumbprints JWKS_FILE           every key imports; RFC 7638 kid matches
//   node jose_peer.mjs sign ALG DIR CLAIMS_JSON        new jose key pair: DIR/jwks.json,
//                                                      DIR/private.jwk (mode 0600); prints a JWT
//   node jose_peer.mjs sign-pkcs8 ALG PEM KID CLAIMS   sign with a PKCS#8 PEM file; prints a JWT
// Exit status 0 on success; the reason on stderr otherwise.
import fs from 'node:fs';
import path from 'node:path';
import * as jose from 'jose';

const [command, ...args] = process.argv.slice(2);

function readJson(file) {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

async function verify(jwksFile, jwt, alg) {
  const jwks = jose.createLocalJWKSet(readJson(jwksFile));
  const { payload, protectedHeader } = await jose.jwtVerify(jwt, jwks, { algorithms: [alg] });
  if (protectedHeader.alg !== alg) throw new Error(`header alg ${protectedHeader.alg} != ${alg}`);
  if (protectedHeader.typ !== 'JWT') throw new Error(`header typ ${protectedHeader.typ}`);
  if (!protectedHeader.kid) throw new Error('header has no kid');
  return payload;
}

async function main() {
  switch (command) {
    case 'verify': {
      const [jwksFile, jwt, alg] = args;
      const payload = await verify(jwksFile, jwt, alg);
      console.log(`jose verified ${alg} JWT for iss=${payload.iss}`);
      return;
    }
    case 'reject': {
      const [jwksFile, jwt, alg] = args;
      try {
        await verify(jwksFile, jwt, alg);
      } catch (e) {
        console.log(`jose rejected it: ${e.code || e.message}`);
        return;
      }
      throw new Error('jose accepted a JWT it should have rejected');
    }
    case 'thumbprints': {
      const { keys } = readJson(args[0]);
      if (!Array.isArray(keys) || keys.length === 0) throw new Error('no keys');
      for (const jwk of keys) {
        for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'])
          if (member in jwk) throw new Error(`public JWK has private member ${member}`);
        await jose.importJWK(jwk, jwk.alg);
        const thumbprint = await jose.calculateJwkThumbprint(jwk, 'sha256');
        if (thumbprint !== jwk.kid)
          throw new Error(`kid ${jwk.kid} but jose's RFC 7638 thumbprint is ${thumbprint}`);
        console.log(`jose imported ${jwk.kty} ${jwk.alg} key, thumbprint = kid ${jwk.kid}`);
      }
      return;
    }
    case 'sign': {
      const [alg, dir, claims] = args;
      const options = { extractable: true };
      if (alg.startsWith('RS') || alg.startsWith('PS')) options.modulusLength = 2048;
      const { publicKey, privateKey } = await jose.generateKeyPair(alg, options);
      const publicJwk = await jose.exportJWK(publicKey);
      const kid = await jose.calculateJwkThumbprint(publicJwk, 'sha256');
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      const jwks = { keys: [{ ...publicJwk, kid, alg, use: 'sig' }] };
      fs.writeFileSync(path.join(dir, 'jwks.json'), JSON.stringify(jwks, null, 2));
      const privateJwk = await jose.exportJWK(privateKey);
      fs.writeFileSync(path.join(dir, 'private.jwk'), JSON.stringify(privateJwk), { mode: 0o600 });
      const jwt = await new jose.SignJWT(JSON.parse(claims))
        .setProtectedHeader({ alg, kid, typ: 'JWT' })
        .sign(privateKey);
      console.log(jwt);
      return;
    }
    case 'sign-pkcs8': {
      const [alg, pemFile, kid, claims] = args;
      const privateKey = await jose.importPKCS8(fs.readFileSync(pemFile, 'utf8'), alg);
      const jwt = await new jose.SignJWT(JSON.parse(claims))
        .setProtectedHeader({ alg, kid, typ: 'JWT' })
        .sign(privateKey);
      console.log(jwt);
      return;
    }
    default:
      throw new Error(`unknown command ${command}`);
  }
}

main().catch((e) => {
  console.error(`jose_peer ${command}: ${e.code ? e.code + ': ' : ''}${e.message}`);
  process.exit(1);
});
