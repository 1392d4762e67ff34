//! `gitbroker credential get|store|erase`: the binary's side of git's
//! credential-helper protocol (the protocol itself is
//! `gitbroker::credential`). One request to the broker per `get`.

use gitbroker::credential::{Description, Reply, Token, reply};
use secrecy::{ExposeSecret, SecretString};
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

fn runtime_credential(file: Option<&Path>) -> Result<SecretString, String> {
    let value = match file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            format!(
                "reading the runtime credential from {}: {e}",
                path.display()
            )
        })?,
        None => std::env::var("GITBROKER_RUNTIME_CREDENTIAL").map_err(|_| {
            "give the runtime credential in GITBROKER_RUNTIME_CREDENTIAL or with --credential-file"
                .to_owned()
        })?,
    };
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err("the runtime credential is empty".into());
    }
    Ok(SecretString::from(value))
}

async fn fetch(
    url: &str,
    runtime: &str,
    user: Option<&str>,
    credential: &SecretString,
) -> Result<Token, String> {
    let segment = |s: &str| -> String {
        url::form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    let path = match user {
        Some(u) => format!(
            "/api/v1/runtimes/{}/users/{}/token",
            segment(runtime),
            segment(u)
        ),
        None => format!("/api/v1/runtimes/{}/token", segment(runtime)),
    };
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .get(format!("{}{path}", url.trim_end_matches('/')))
        .bearer_auth(credential.expose_secret())
        .send()
        .await
        .map_err(|e| format!("the broker at {url} could not be reached ({e})"))?;
    let status = resp.status();
    if status.is_success() {
        return resp
            .json::<Token>()
            .await
            .map_err(|_| "the broker's answer was not a token".to_owned());
    }
    // the problem's detail says why (no token yet, expired, revoked, …)
    let detail = resp
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
        .unwrap_or_default();
    Err(format!("the broker answered {}: {detail}", status.as_u16()))
}

pub async fn run(
    url: &str,
    runtime: &str,
    credential_file: Option<&Path>,
    user: Option<&str>,
    operation: &str,
) -> ExitCode {
    let mut input = String::new();
    if std::io::stdin().read_to_string(&mut input).is_err() {
        eprintln!("gitbroker: could not read git's request on standard input");
        return ExitCode::from(1);
    }
    match operation {
        // nothing is kept: every operation asks the broker afresh
        "store" | "erase" => return ExitCode::SUCCESS,
        "get" => {}
        other => {
            eprintln!("gitbroker: unknown credential operation `{other}` (get, store, erase)");
            return ExitCode::from(1);
        }
    }
    let desc = Description::parse(&input);
    let credential = match runtime_credential(credential_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gitbroker: {e}");
            return ExitCode::from(1);
        }
    };
    let token = match fetch(url, runtime, user, &credential).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("gitbroker: {e}");
            // declared credentials only: never let git fall back to another
            println!("quit=1");
            return ExitCode::SUCCESS;
        }
    };
    let out = match reply(&desc, &token) {
        Reply::Credential(lines) => lines,
        Reply::NotOurs => return ExitCode::SUCCESS,
        Reply::Cannot(message) => {
            eprintln!("{message}");
            "quit=1\n".into()
        }
    };
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
        .is_err()
    {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
