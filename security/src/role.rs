//! Who may do what: roles, role sets and authenticated principals.
//!
//! The gRPC layer maps each service to the one role it needs (`Sessions` → [`Role::App`],
//! the revocation stream → [`Role::Watch`], `Cluster` and anything else → [`Role::Operator`])
//! and asks [`Principal::may`].

use std::fmt;
use std::str::FromStr;

/// A permission a principal can hold. A principal may hold several.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The Sessions service: create, read, touch and revoke sessions.
    App,
    /// The revocation stream.
    Watch,
    /// The Cluster service (membership, snapshots, backup) and everything else; implies the
    /// other roles.
    Operator,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 3] = [Role::App, Role::Watch, Role::Operator];

    /// The name used in the access file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::App => "app",
            Role::Watch => "watch",
            Role::Operator => "operator",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Role::App => 1,
            Role::Watch => 2,
            Role::Operator => 4,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a role name that is not `app`, `watch` or `operator`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown role (expected app, watch or operator)")]
pub struct UnknownRole;

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "app" => Ok(Role::App),
            "watch" => Ok(Role::Watch),
            "operator" => Ok(Role::Operator),
            _ => Err(UnknownRole),
        }
    }
}

/// A set of roles (a bit set: three roles, copied freely).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RoleSet(u8);

impl RoleSet {
    /// No roles: an authenticated principal the access file does not list.
    pub const fn empty() -> Self {
        RoleSet(0)
    }

    /// Adds a role.
    pub fn insert(&mut self, role: Role) {
        self.0 |= role.bit();
    }

    /// Whether the role itself is in the set (no implication; see [`Principal::may`]).
    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The roles in the set, in [`Role::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

impl FromIterator<Role> for RoleSet {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Self {
        let mut set = RoleSet::empty();
        for role in iter {
            set.insert(role);
        }
        set
    }
}

impl fmt::Debug for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, role) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(role.as_str())?;
        }
        Ok(())
    }
}

/// An authenticated caller: the certificate's common name or the access-file entry a bearer
/// credential belongs to, with the roles the access file gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The name (certificate common name, or the access file's `name`). Safe to log.
    pub name: String,
    /// The roles held.
    pub roles: RoleSet,
}

impl Principal {
    /// Whether this principal may act with `role`: it holds the role, or it is an operator
    /// (operators may do everything).
    pub fn may(&self, role: Role) -> bool {
        self.roles.contains(role) || self.roles.contains(Role::Operator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_operator_may_everything() {
        assert_eq!("app".parse(), Ok(Role::App));
        assert_eq!("watch".parse(), Ok(Role::Watch));
        assert_eq!("operator".parse(), Ok(Role::Operator));
        assert_eq!("App".parse::<Role>(), Err(UnknownRole));

        let app = Principal {
            name: "web".into(),
            roles: [Role::App].into_iter().collect(),
        };
        assert!(app.may(Role::App));
        assert!(!app.may(Role::Watch));
        assert!(!app.may(Role::Operator));

        let op = Principal {
            name: "ops".into(),
            roles: [Role::Operator].into_iter().collect(),
        };
        for role in Role::ALL {
            assert!(op.may(role), "operator may {role}");
        }

        let both: RoleSet = [Role::Watch, Role::App].into_iter().collect();
        assert_eq!(both.to_string(), "app,watch");
        assert_eq!(format!("{both:?}"), "{App, Watch}");
        assert!(RoleSet::empty().is_empty());
    }
}
