//! `gitbroker runtime …`: runtime registration and Git Runtime token
//! rotation through a running broker's admin API, so it works the same on
//! the embedded store (held open by the server) and on Redis.

use crate::cli::{GitTokenArgs, Remote, RuntimeCommand};
use serde_json::{Value, json};
use std::io::Read;
use std::process::ExitCode;

pub(crate) fn admin_token() -> Result<String, String> {
    std::env::var("GITBROKER_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "set GITBROKER_ADMIN_TOKEN to the broker's admin API token".to_owned())
}

fn read_git_token(args: &GitTokenArgs) -> Result<Value, String> {
    let mut token = String::new();
    std::io::stdin()
        .read_to_string(&mut token)
        .map_err(|e| format!("reading the Git Runtime token from standard input: {e}"))?;
    let token = token.trim();
    if token.is_empty() {
        return Err("give the Git Runtime token on standard input".into());
    }
    Ok(json!({ "token": token, "username": args.username, "email": args.email }))
}

async fn call(
    remote: &Remote,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("{}/api/v1/admin{path}", remote.url.trim_end_matches('/'));
    let mut req = client.request(method, &url).bearer_auth(admin_token()?);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let value: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(value)
    } else {
        Err(format!(
            "the broker answered {}: {}",
            status.as_u16(),
            value["detail"].as_str().unwrap_or("(no detail)")
        ))
    }
}

pub async fn run(command: RuntimeCommand) -> ExitCode {
    let result = match command {
        RuntimeCommand::Register {
            remote,
            id,
            account,
            git_host,
            oauth_app,
            provider,
            base_url,
            github_app,
            installation_id,
            owner,
            repositories,
            rotate_runtime_token,
            token,
        } => match github_app
            .as_ref()
            .map_or_else(|| read_git_token(&token).map(Some), |_| Ok(None))
        {
            Ok(git_token) => {
                let mut body = json!({
                    "id": id, "account": account, "git_host": git_host, "oauth_app": oauth_app,
                    "provider": provider, "base_url": base_url, "repositories": repositories,
                    "rotate_runtime_token": rotate_runtime_token,
                });
                match git_token {
                    Some(t) => body["git_token"] = t,
                    None => {
                        body["github_app"] = json!({
                            "app": github_app, "installation_id": installation_id, "owner": owner,
                        });
                    }
                }
                call(&remote, reqwest::Method::POST, "/runtimes", Some(body))
                    .await
                    .map(|v| {
                        format!(
                            "runtime {} registered; Git Runtime token of {} ({}) accepted\nruntime credential (shown once, store it in the runtime's secret): {}",
                            v["id"].as_str().unwrap_or(""),
                            v["git_token"]["provider_login"].as_str().unwrap_or(""),
                            v["git_token"]["kind"].as_str().unwrap_or(""),
                            v["credential"].as_str().unwrap_or("")
                        )
                    })
            }
            Err(e) => Err(e),
        },
        RuntimeCommand::RotateToken { remote, id, token } => match read_git_token(&token) {
            Ok(git_token) => call(
                &remote,
                reqwest::Method::PUT,
                &format!("/runtimes/{id}/git-token"),
                Some(git_token),
            )
            .await
            .map(|v| {
                format!(
                    "Git Runtime token of runtime {id} rotated: {}",
                    status_line(&v)
                )
            }),
            Err(e) => Err(e),
        },
        RuntimeCommand::TokenStatus { remote, id } => call(
            &remote,
            reqwest::Method::GET,
            &format!("/runtimes/{id}/git-token"),
            None,
        )
        .await
        .map(|v| status_line(&v)),
    };
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gitbroker: {e}");
            ExitCode::from(1)
        }
    }
}

fn status_line(v: &Value) -> String {
    format!(
        "{} {} of {}, scopes [{}], expires {}, set {}",
        v["provider"].as_str().unwrap_or(""),
        v["kind"].as_str().unwrap_or(""),
        v["provider_login"].as_str().unwrap_or(""),
        v["scopes"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        v["expires_at"].as_str().unwrap_or("never"),
        v["set_at"].as_str().unwrap_or("")
    )
}
