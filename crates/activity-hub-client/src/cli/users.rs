//! `user get|create|update|delete|list|set-roles|watch`.

use activity_hub_proto::user::v1::{self as upb, get_user_request::Identifier};
use serde_json::{json, Value};

use super::{output::*, read_secret, Failure, RoleArg, UserCmd};
use crate::Client;

fn wire_role(r: RoleArg) -> upb::UserRole {
    match r {
        RoleArg::User => upb::UserRole::User,
        RoleArg::Admin => upb::UserRole::Admin,
        RoleArg::Moderator => upb::UserRole::Moderator,
        RoleArg::Publisher => upb::UserRole::Publisher,
    }
}

/// A user named by id, email (has an `@`) or username.
fn identifier(who: String) -> Identifier {
    match who.parse::<u64>() {
        Ok(n) => Identifier::UserId(n),
        Err(_) if who.contains('@') => Identifier::Email(who),
        Err(_) => Identifier::Username(who),
    }
}

/// The id of the user `who` names (looked up unless it is an id).
pub(super) async fn resolve(client: &Client, who: &str) -> Result<u64, Failure> {
    match identifier(who.to_string()) {
        Identifier::UserId(n) => Ok(n),
        other => Ok(client.find_user(other).await?.id),
    }
}

/// The id `who` names, or 0 (the caller) when it is `None`.
pub(super) async fn resolve_or_me(client: &Client, who: Option<&str>) -> Result<u64, Failure> {
    match who {
        Some(w) => resolve(client, w).await,
        None => Ok(0),
    }
}

/// `user watch`: one line (or JSON object) per change until `count` or Ctrl-C.
async fn watch(client: &Client, who: &[String], count: Option<u64>, as_json: bool) -> Result<(), Failure> {
    let mut ids = Vec::new();
    for w in who {
        ids.push(resolve(client, w).await?);
    }
    if ids.is_empty() {
        ids.push(0);
    }
    let mut changes = client.watch_users(&ids).await?;
    let mut seen = 0u64;
    while count.is_none_or(|c| seen < c) {
        let change = tokio::select! {
            c = changes.message() => c.map_err(crate::ClientError::from)?,
            _ = tokio::signal::ctrl_c() => return Err(super::fail(super::EXIT_INTERRUPTED, "interrupted")),
        };
        let Some(change) = change else {
            return Err(super::fail(5, "the server ended the watch"));
        };
        seen += 1;
        let kind = upb::user_activity_event::Kind::try_from(change.kind)
            .map(|k| k.as_str_name().trim_start_matches("KIND_").to_lowercase())
            .unwrap_or_else(|_| change.kind.to_string());
        match (&change.user, as_json) {
            (Some(u), true) => out!(
                "{}",
                json!({"kind": kind, "user_id": change.user_id, "at": time(&change.occurred_at), "user": user_json(u)})
            ),
            (None, true) => out!(
                "{}",
                json!({"kind": kind, "user_id": change.user_id, "at": time(&change.occurred_at)})
            ),
            (u, false) => out!(
                "{}  {kind:<9}  user {}  {}",
                time(&change.occurred_at),
                change.user_id,
                u.as_ref().map(|u| u.username.as_str()).unwrap_or("")
            ),
        }
    }
    Ok(())
}

pub(super) async fn run(client: &Client, cmd: UserCmd, as_json: bool) -> Result<(), Failure> {
    let show = |u: &upb::User| {
        if as_json {
            out!("{}", user_json(u));
        } else {
            table(USER_HEAD, vec![user_row(u)]);
        }
    };
    match cmd {
        UserCmd::Create {
            email,
            username,
            password,
            first_name,
            last_name,
            roles,
        } => {
            let password = read_secret(password, "new user's password")?;
            let roles = roles.iter().map(|r| wire_role(*r) as i32).collect();
            let u = client
                .create_user(upb::CreateUserRequest {
                    email,
                    username,
                    password,
                    first_name,
                    last_name,
                    roles,
                })
                .await?;
            show(&u);
        }
        UserCmd::Get { who } => show(&client.find_user(identifier(who)).await?),
        UserCmd::SetRoles { who, roles } => {
            let id = resolve(client, &who).await?;
            let roles: Vec<upb::UserRole> = roles.iter().map(|r| wire_role(*r)).collect();
            show(&client.set_roles(id, &roles).await?);
        }
        UserCmd::Watch { who, count } => return watch(client, &who, count, as_json).await,
        UserCmd::List { limit, page, search } => {
            let r = client
                .list_users(upb::ListUsersRequest {
                    page,
                    limit,
                    search,
                    ..Default::default()
                })
                .await?;
            if as_json {
                let users: Vec<Value> = r.users.iter().map(user_json).collect();
                out!(
                    "{}",
                    json!({"users": users, "total": r.total, "has_more": r.has_more})
                );
            } else {
                table(USER_HEAD, r.users.iter().map(user_row).collect());
                out!("{} of {} (page {page})", r.users.len(), r.total);
            }
        }
        UserCmd::Update {
            who,
            username,
            first_name,
            last_name,
            bio,
        } => {
            let u = client
                .update_user(upb::UpdateUserRequest {
                    user_id: resolve(client, &who).await?,
                    username,
                    first_name,
                    last_name,
                    bio,
                    ..Default::default()
                })
                .await?;
            show(&u);
        }
        UserCmd::Delete { who } => {
            let id = resolve(client, &who).await?;
            client.delete_user(id).await?;
            if as_json {
                out!("{}", json!({"deleted": id}));
            } else {
                out!("deleted user {id}");
            }
        }
    }
    Ok(())
}
