//! Commands: what a sanitised line asks for, decided without looking at shared state.

/// The longest nick, in ASCII characters.
pub(crate) const MAX_NICK: usize = 32;
/// The longest room name, in characters.
pub(crate) const MAX_ROOM: usize = 32;
/// The room everyone starts in.
pub(crate) const LOBBY: &str = "lobby";

/// A line's meaning. `Invalid` carries the whole `Error: …` reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Request<'a> {
    Say(&'a str),
    Help,
    Nick(&'a str),
    Who,
    Msg { target: Target<'a>, text: &'a str },
    Join(&'a str),
    Rooms,
    Quit,
    Invalid(String),
}

/// Whom a private message is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    Id(u64),
    Nick(&'a str),
}

/// The `/help` text, one `* ` line each.
pub(crate) const HELP: &str = "\
* /help              lists these commands
* /nick NAME         takes a nick (letters, digits, _ and -, starting with a letter)
* /who               lists the people in your room
* /msg TARGET TEXT   sends TEXT privately to a nick or #id
* /join ROOM         leaves your room and joins ROOM
* /rooms             lists the rooms and how many are in each
* /quit              closes the connection
* //TEXT             says a line that starts with /
";

/// Parses a sanitised, trimmed, non-empty line.
pub(crate) fn parse(line: &str) -> Request<'_> {
    let Some(command) = line.strip_prefix('/') else {
        return Request::Say(line);
    };
    if command.starts_with('/') {
        return Request::Say(command);
    }
    let (name, args) = match command.find([' ', '\t']) {
        Some(blank) => (&command[..blank], command[blank..].trim_matches([' ', '\t'])),
        None => (command, ""),
    };
    match name {
        "help" => no_args(Request::Help, "/help", args),
        "who" => no_args(Request::Who, "/who", args),
        "rooms" => no_args(Request::Rooms, "/rooms", args),
        "quit" => no_args(Request::Quit, "/quit", args),
        "nick" => nick(args),
        "join" => join(args),
        "msg" => msg(args),
        _ => Request::Invalid(format!("Error: unknown command /{name} (try /help)")),
    }
}

fn no_args<'a>(request: Request<'a>, usage: &str, args: &str) -> Request<'a> {
    if args.is_empty() {
        request
    } else {
        Request::Invalid(format!("Error: {usage} takes no arguments"))
    }
}

fn nick(args: &str) -> Request<'_> {
    if args.is_empty() || args.contains([' ', '\t']) {
        return Request::Invalid("Error: usage: /nick NAME".to_owned());
    }
    match check_nick(args) {
        Ok(()) => Request::Nick(args),
        Err(error) => Request::Invalid(error),
    }
}

/// Checks a nick's form (not whether it is free), returning the `Error: …` reply.
pub(crate) fn check_nick(nick: &str) -> Result<(), String> {
    let well_formed = nick.len() <= MAX_NICK
        && nick.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && nick.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !well_formed {
        return Err(format!(
            "Error: invalid nick {nick}: use 1 to {MAX_NICK} letters, digits, _ or -, starting with a letter"
        ));
    }
    if ["client", "you", "server"].iter().any(|r| nick.eq_ignore_ascii_case(r)) {
        return Err(format!("Error: the nick {nick} is reserved"));
    }
    Ok(())
}

fn join(args: &str) -> Request<'_> {
    if args.is_empty() {
        return Request::Invalid("Error: usage: /join ROOM".to_owned());
    }
    if args.contains(char::is_whitespace) || args.chars().count() > MAX_ROOM {
        return Request::Invalid(format!(
            "Error: invalid room name: use 1 to {MAX_ROOM} characters without blanks"
        ));
    }
    Request::Join(args)
}

fn msg(args: &str) -> Request<'_> {
    let usage = || Request::Invalid("Error: usage: /msg TARGET TEXT".to_owned());
    let Some(blank) = args.find([' ', '\t']) else {
        return usage();
    };
    let (target, text) = (&args[..blank], args[blank..].trim_matches([' ', '\t']));
    if text.is_empty() {
        return usage();
    }
    let target = match target.strip_prefix('#') {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            match digits.parse() {
                Ok(id) => Target::Id(id),
                Err(_) => return Request::Invalid(format!("Error: no such user: {target}")),
            }
        }
        _ => Target::Nick(target),
    };
    Request::Msg { target, text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(line: &str) -> String {
        match parse(line) {
            Request::Invalid(e) => e,
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn plain_lines_and_the_escape() {
        assert_eq!(parse("hi there"), Request::Say("hi there"));
        assert_eq!(parse("//help"), Request::Say("/help"));
        assert_eq!(parse("// x"), Request::Say("/ x"));
        assert_eq!(parse("a /nick b"), Request::Say("a /nick b"));
    }

    #[test]
    fn simple_commands() {
        assert_eq!(parse("/help"), Request::Help);
        assert_eq!(parse("/who"), Request::Who);
        assert_eq!(parse("/rooms"), Request::Rooms);
        assert_eq!(parse("/quit"), Request::Quit);
        assert_eq!(invalid("/who me"), "Error: /who takes no arguments");
    }

    #[test]
    fn names_are_exact_and_lower_case() {
        assert_eq!(invalid("/HELP"), "Error: unknown command /HELP (try /help)");
        assert_eq!(invalid("/x"), "Error: unknown command /x (try /help)");
        assert_eq!(invalid("/"), "Error: unknown command / (try /help)");
        assert_eq!(invalid("/helpme"), "Error: unknown command /helpme (try /help)");
        assert_eq!(parse("/help\t"), Request::Help);
    }

    #[test]
    fn nick_rules() {
        assert_eq!(parse("/nick alice"), Request::Nick("alice"));
        assert_eq!(parse("/nick  a_b-9 "), Request::Nick("a_b-9"));
        assert_eq!(
            parse(&format!("/nick a{}", "b".repeat(31))),
            Request::Nick(&format!("a{}", "b".repeat(31)))
        );
        assert!(invalid(&format!("/nick a{}", "b".repeat(32))).starts_with("Error: invalid nick"));
        assert!(invalid("/nick 9lives").starts_with("Error: invalid nick"));
        assert!(invalid("/nick _x").starts_with("Error: invalid nick"));
        assert!(invalid("/nick é").starts_with("Error: invalid nick"));
        assert_eq!(invalid("/nick"), "Error: usage: /nick NAME");
        assert_eq!(invalid("/nick a b"), "Error: usage: /nick NAME");
        for reserved in ["Client", "YOU", "server"] {
            assert_eq!(
                invalid(&format!("/nick {reserved}")),
                format!("Error: the nick {reserved} is reserved")
            );
        }
    }

    #[test]
    fn join_rules() {
        assert_eq!(parse("/join games"), Request::Join("games"));
        assert_eq!(parse(&format!("/join {}", "é".repeat(32))), Request::Join(&"é".repeat(32)));
        assert_eq!(invalid("/join"), "Error: usage: /join ROOM");
        assert!(invalid("/join a b").starts_with("Error: invalid room name"));
        assert!(invalid(&format!("/join {}", "r".repeat(33))).starts_with("Error: invalid room name"));
    }

    #[test]
    fn msg_rules() {
        assert_eq!(
            parse("/msg bob hello  there"),
            Request::Msg { target: Target::Nick("bob"), text: "hello  there" }
        );
        assert_eq!(parse("/msg #12 hi"), Request::Msg { target: Target::Id(12), text: "hi" });
        assert_eq!(parse("/msg # hi"), Request::Msg { target: Target::Nick("#"), text: "hi" });
        assert_eq!(invalid("/msg bob"), "Error: usage: /msg TARGET TEXT");
        assert_eq!(invalid("/msg"), "Error: usage: /msg TARGET TEXT");
        assert_eq!(
            invalid("/msg #99999999999999999999999 hi"),
            "Error: no such user: #99999999999999999999999"
        );
    }

    #[test]
    fn help_lists_every_command() {
        for command in ["/help", "/nick", "/who", "/msg", "/join", "/rooms", "/quit", "//"] {
            assert!(HELP.contains(command), "{command}");
        }
        assert!(HELP.lines().all(|l| l.starts_with("* ")));
    }
}
