//! `GET /docs`: the OpenAPI document rendered as one plain HTML page.
//!
//! Rendered once, at start-up, from the JSON that `/openapi.json` serves, so the two cannot
//! disagree. The page is self-contained: no script, and no stylesheet, font or image from
//! elsewhere, so it works offline and in a text browser. Operations are grouped by tag;
//! each shows its method and path, what it does, how to authenticate, its parameters, its
//! request body and every answer with its schema and problem types. Every string taken
//! from the document is escaped.

use std::fmt::{self, Write};

use serde_json::{Map, Value};

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];

/// Some CSS, inline: readable type, visible focus, high-contrast method labels.
const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;color:#1b1b1b;background:#fff;\
max-width:62rem;margin:0 auto;padding:1rem 1.5rem}\
code{font-family:ui-monospace,monospace;background:#f2f2f2;padding:0 .2em;border-radius:3px}\
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}\
th,td{border:1px solid #c8c8c8;padding:.3rem .5rem;text-align:left;vertical-align:top}\
th{background:#f2f2f2}article{border-top:1px solid #c8c8c8;margin-top:1.5rem}\
.method{font-family:ui-monospace,monospace;font-weight:bold;padding:0 .3em;border-radius:3px;\
background:#1b1b1b;color:#fff}a:focus{outline:3px solid #005fcc}nav ul ul{margin:0}";

/// The page for `document` (the OpenAPI document as JSON).
pub fn render(document: &Value) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = Page { document }.write(&mut out);
    out
}

struct Page<'a> {
    document: &'a Value,
}

/// One operation: its tag, method, path and body.
struct Operation<'a> {
    method: &'a str,
    path: &'a str,
    op: &'a Value,
}

impl Page<'_> {
    fn write(&self, out: &mut String) -> fmt::Result {
        let info = &self.document["info"];
        let title = text(&info["title"]);
        writeln!(
            out,
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{} API reference</title>\n<style>{STYLE}</style>\n</head>\n<body>",
            esc(title)
        )?;
        writeln!(
            out,
            "<header>\n<h1>{} API reference <small>version {}</small></h1>",
            esc(title),
            esc(text(&info["version"]))
        )?;
        prose(out, text(&info["description"]))?;
        writeln!(
            out,
            "<p>The same reference, machine-readable: <a href=\"/openapi.json\"><code>/openapi.json</code></a> \
             (OpenAPI {}).</p>\n</header>",
            esc(text(&self.document["openapi"]))
        )?;
        let groups = self.groups();
        self.contents(out, &groups)?;
        writeln!(out, "<main>")?;
        for (tag, description, operations) in &groups {
            writeln!(
                out,
                "<section id=\"tag-{0}\" aria-labelledby=\"tag-{0}-title\">\n<h2 id=\"tag-{0}-title\">{0}</h2>",
                esc(tag)
            )?;
            prose(out, description)?;
            for operation in operations {
                self.operation(out, operation)?;
            }
            writeln!(out, "</section>")?;
        }
        self.schemas(out)?;
        writeln!(out, "</main>\n</body>\n</html>")
    }

    /// Operations by tag, in the order of the document's tag list (untagged ones last).
    fn groups(&self) -> Vec<(String, &str, Vec<Operation<'_>>)> {
        let mut groups: Vec<(String, &str, Vec<Operation<'_>>)> = array(&self.document["tags"])
            .iter()
            .map(|t| (text(&t["name"]).to_owned(), text(&t["description"]), Vec::new()))
            .collect();
        for (path, item) in object(&self.document["paths"]) {
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                let tag = array(&op["tags"]).first().map_or("other", text);
                let index = match groups.iter().position(|(name, ..)| name == tag) {
                    Some(i) => i,
                    None => {
                        groups.push((tag.to_owned(), "", Vec::new()));
                        groups.len() - 1
                    }
                };
                groups[index].2.push(Operation { method, path, op });
            }
        }
        groups.retain(|(.., operations)| !operations.is_empty());
        groups
    }

    fn contents(&self, out: &mut String, groups: &[(String, &str, Vec<Operation<'_>>)]) -> fmt::Result {
        writeln!(out, "<nav aria-label=\"Contents\">\n<h2>Contents</h2>\n<ul>")?;
        for (tag, _, operations) in groups {
            writeln!(out, "<li><a href=\"#tag-{0}\">{0}</a>\n<ul>", esc(tag))?;
            for o in operations {
                writeln!(
                    out,
                    "<li><a href=\"#op-{}\"><code>{} {}</code></a> {}</li>",
                    esc(text(&o.op["operationId"])),
                    o.method.to_uppercase(),
                    esc(o.path),
                    inline(text(&o.op["summary"]))
                )?;
            }
            writeln!(out, "</ul></li>")?;
        }
        writeln!(out, "<li><a href=\"#schemas\">Schemas</a></li>\n</ul>\n</nav>")
    }

    fn operation(&self, out: &mut String, o: &Operation<'_>) -> fmt::Result {
        let op = o.op;
        writeln!(
            out,
            "<article id=\"op-{}\">\n<h3><span class=\"method\">{}</span> <code>{}</code></h3>",
            esc(text(&op["operationId"])),
            o.method.to_uppercase(),
            esc(o.path)
        )?;
        prose(out, text(&op["summary"]))?;
        prose(out, text(&op["description"]))?;
        let schemes = &self.document["components"]["securitySchemes"];
        let credentials: Vec<String> = array(&op["security"])
            .iter()
            .flat_map(|requirement| object(requirement).keys())
            .map(|name| match schemes[name.as_str()]["description"].as_str() {
                Some(description) => inline(description),
                None => format!("<code>{}</code>", esc(name)),
            })
            .collect();
        let credentials = if credentials.is_empty() {
            "none.".to_owned()
        } else {
            credentials.join(" Or: ")
        };
        writeln!(out, "<p><strong>Authentication:</strong> {credentials}</p>")?;

        let parameters = array(&op["parameters"]);
        if !parameters.is_empty() {
            writeln!(
                out,
                "<h4>Parameters</h4>\n<table>\n<thead><tr><th scope=\"col\">Name</th><th scope=\"col\">In</th>\
                 <th scope=\"col\">Type</th><th scope=\"col\">Required</th><th scope=\"col\">Description</th></tr></thead>\n<tbody>"
            )?;
            for p in parameters {
                writeln!(
                    out,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(text(&p["name"])),
                    esc(text(&p["in"])),
                    label(&p["schema"]),
                    yes_no(p["required"].as_bool().unwrap_or(false)),
                    described(&p["schema"], text(&p["description"]))
                )?;
            }
            writeln!(out, "</tbody>\n</table>")?;
        }

        if let Some(body) = op.get("requestBody") {
            writeln!(out, "<h4>Request body</h4>")?;
            for (media_type, content) in object(&body["content"]) {
                writeln!(
                    out,
                    "<p><code>{}</code>{}: {}</p>",
                    esc(media_type),
                    if body["required"].as_bool().unwrap_or(false) {
                        ", required"
                    } else {
                        ""
                    },
                    label(&content["schema"])
                )?;
            }
        }

        writeln!(
            out,
            "<h4>Responses</h4>\n<table>\n<thead><tr><th scope=\"col\">Status</th><th scope=\"col\">Meaning</th>\
             <th scope=\"col\">Body</th></tr></thead>\n<tbody>"
        )?;
        for (status, response) in object(&op["responses"]) {
            let bodies: Vec<String> = object(&response["content"])
                .iter()
                .map(|(media_type, content)| format!("<code>{}</code>: {}", esc(media_type), label(&content["schema"])))
                .collect();
            writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(status),
                inline(text(&response["description"])),
                if bodies.is_empty() {
                    "none".to_owned()
                } else {
                    bodies.join("<br>")
                }
            )?;
        }
        writeln!(out, "</tbody>\n</table>\n</article>")
    }

    fn schemas(&self, out: &mut String) -> fmt::Result {
        writeln!(
            out,
            "<section id=\"schemas\" aria-labelledby=\"schemas-title\">\n<h2 id=\"schemas-title\">Schemas</h2>"
        )?;
        for (name, schema) in object(&self.document["components"]["schemas"]) {
            writeln!(out, "<article id=\"schema-{0}\">\n<h3>{0}</h3>", esc(name))?;
            prose(out, text(&schema["description"]))?;
            shape(out, schema)?;
            writeln!(out, "</article>")?;
        }
        writeln!(out, "</section>")
    }
}

/// What a schema is made of: its properties, its alternatives, or its type.
fn shape(out: &mut String, schema: &Value) -> fmt::Result {
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        writeln!(out, "<p>All of:</p>\n<ul>")?;
        for part in parts {
            part_item(out, part)?;
        }
        return writeln!(out, "</ul>");
    }
    if let Some(parts) = schema.get("oneOf").and_then(Value::as_array) {
        writeln!(out, "<p>One of:</p>\n<ul>")?;
        for part in parts {
            part_item(out, part)?;
        }
        return writeln!(out, "</ul>");
    }
    if schema.get("properties").is_some() {
        return properties(out, schema);
    }
    writeln!(out, "<p>Type: {}</p>", described(schema, ""))
}

fn part_item(out: &mut String, part: &Value) -> fmt::Result {
    write!(out, "<li>")?;
    if part.get("$ref").is_some() || part.get("properties").is_none() {
        write!(out, "{}", label(part))?;
        let description = text(&part["description"]);
        if !description.is_empty() {
            write!(out, ": {}", inline(description))?;
        }
    } else {
        prose(out, text(&part["description"]))?;
        properties(out, part)?;
    }
    writeln!(out, "</li>")
}

fn properties(out: &mut String, schema: &Value) -> fmt::Result {
    let required: Vec<&str> = array(&schema["required"]).iter().map(text).collect();
    writeln!(
        out,
        "<table>\n<thead><tr><th scope=\"col\">Field</th><th scope=\"col\">Type</th>\
         <th scope=\"col\">Required</th><th scope=\"col\">Description</th></tr></thead>\n<tbody>"
    )?;
    for (name, property) in object(&schema["properties"]) {
        writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            label(property),
            yes_no(required.contains(&name.as_str())),
            described(property, "")
        )?;
    }
    writeln!(out, "</tbody>\n</table>")
}

/// A schema's type in a few words, linking to named schemas.
fn label(schema: &Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return format!("<a href=\"#schema-{0}\">{0}</a>", esc(name));
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        // The narrowing parts (an error's `type` enum) are in the answer's description.
        let named: Vec<String> = parts.iter().filter(|p| p.get("$ref").is_some()).map(label).collect();
        return if named.is_empty() {
            "object".into()
        } else {
            named.join(" and ")
        };
    }
    if let Some(parts) = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
    {
        return parts.iter().map(label).collect::<Vec<_>>().join(" or ");
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values
            .iter()
            .map(|v| format!("<code>{}</code>", esc(&plain(v))))
            .collect();
        return format!("one of {}", values.join(", "));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().map(text).collect(),
        _ => return "any JSON".into(),
    };
    types
        .iter()
        .map(|t| match *t {
            "array" => format!("array of {}", label(&schema["items"])),
            "object" => match schema.get("additionalProperties") {
                Some(values) if values.is_object() => format!("map of string to {}", label(values)),
                _ => "object".into(),
            },
            "null" => "null".into(),
            other => match schema["format"].as_str() {
                Some(format) => format!("{} ({})", esc(other), esc(format)),
                None => esc(other),
            },
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// `description` (or the schema's own) followed by the schema's constraints.
fn described(schema: &Value, description: &str) -> String {
    let description = if description.is_empty() {
        text(&schema["description"])
    } else {
        description
    };
    let mut notes = Vec::new();
    if !description.is_empty() {
        notes.push(inline(description));
    }
    for (key, before, after) in [
        ("pattern", "Matches <code>", "</code>."),
        ("minLength", "At least ", " characters."),
        ("maxLength", "At most ", " characters."),
        ("minimum", "At least ", "."),
        ("maximum", "At most ", "."),
        ("default", "Default: <code>", "</code>."),
        ("example", "Example: <code>", "</code>."),
    ] {
        match schema.get(key) {
            // A minimum of 0 only says "unsigned", which an integer's answer shows anyway.
            Some(value) if !(key == "minimum" && *value == 0) => {
                notes.push(format!("{before}{}{after}", esc(&plain(value))));
            }
            _ => {}
        }
    }
    notes.join(" ")
}

/// A JSON value as shown to people: strings without their quotes.
fn plain(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

/// Paragraphs of `text` (blank-line separated), with `code` spans.
fn prose(out: &mut String, text: &str) -> fmt::Result {
    for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        writeln!(out, "<p>{}</p>", inline(paragraph))?;
    }
    Ok(())
}

/// `text` escaped, with its backtick spans as `<code>`.
fn inline(text: &str) -> String {
    let mut html = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            html.push_str("<code>");
            html.push_str(&esc(part));
            html.push_str("</code>");
        } else {
            html.push_str(&esc(part));
        }
    }
    html
}

fn esc(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn yes_no(yes: bool) -> &'static str {
    if yes { "yes" } else { "no" }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

fn object(value: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
    value.as_object().unwrap_or(&EMPTY)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn document() -> Value {
        json!({
            "openapi": "3.1.0",
            "info": {"title": "T <&>", "version": "1", "description": "Uses `a<b>`.\n\nSecond."},
            "tags": [{"name": "things", "description": "Things."}],
            "paths": {"/things/{id}": {"get": {
                "tags": ["things"], "operationId": "get_thing", "summary": "One <thing>.",
                "security": [{"key": []}],
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
                "responses": {
                    "200": {"description": "It.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
                    "404": {"description": "Problem types: `not-found`.", "content": {"application/problem+json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Problem"}, {"properties": {"type": {"enum": ["x"]}}}]}}}}
                }
            }}},
            "components": {
                "securitySchemes": {"key": {"type": "http", "scheme": "bearer", "description": "A `key`."}},
                "schemas": {"Thing": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string", "pattern": "^[a-z]+$"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "kind": {"type": ["string", "null"], "enum": ["a", "b", null]}
                }}}
            }
        })
    }

    #[test]
    fn the_page_escapes_every_string_from_the_document() {
        let page = render(&document());
        assert!(page.contains("<title>T &lt;&amp;&gt; API reference</title>"), "{page}");
        assert!(page.contains("One &lt;thing&gt;."), "{page}");
        assert!(page.contains("<code>a&lt;b&gt;</code>"), "{page}");
        assert!(!page.contains("<thing>") && !page.contains("a<b>"), "{page}");
    }

    #[test]
    fn operations_are_listed_by_tag_with_their_parameters_answers_and_schemas() {
        let page = render(&document());
        assert!(
            page.contains("<a href=\"#op-get_thing\"><code>GET /things/{id}</code></a>"),
            "{page}"
        );
        assert!(page.contains("<section id=\"tag-things\""), "{page}");
        assert!(page.contains("<td>string (uuid)</td>"), "{page}");
        assert!(
            page.contains("<code>application/json</code>: <a href=\"#schema-Thing\">Thing</a>"),
            "{page}"
        );
        assert!(page.contains("<a href=\"#schema-Problem\">Problem</a>"), "{page}");
        assert!(
            page.contains("<strong>Authentication:</strong> A <code>key</code>."),
            "{page}"
        );
        assert!(page.contains("<article id=\"schema-Thing\">"), "{page}");
        assert!(page.contains("array of string"), "{page}");
        assert!(page.contains("Matches <code>^[a-z]+$</code>."), "{page}");
    }
}
