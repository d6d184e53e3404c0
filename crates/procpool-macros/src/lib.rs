//! The `#[task]` attribute that registers a function as a procpool task.
//!
//! The attribute keeps the function callable (as `name::call(..)`), and adds a unit struct of the
//! same name implementing `Task`, so a pool can be asked to run it by naming it
//! (`pool.submit(cube, 3)`). It registers the task in the worker's link-time task table under a
//! stable id: a hash of the module path, the name and the normalised signature.
//! Everything it emits goes through `<crate>::__private`, so it works from the facade (the
//! default, `::procpool`) and from the worker crate (`#[task(crate = procpool_worker)]`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, Ident, ItemFn, Pat, Path, PathArguments, ReturnType, Token, Type,
};

/// Registers a function as a procpool task.
///
/// ```ignore
/// #[procpool::task]
/// fn cube(x: u64) -> u64 {
///     x * x * x
/// }
/// ```
///
/// Parameters are plain identifiers with owned types that rkyv can archive, or `&str`, `&[u8]`
/// or `&[T]`, which are read straight out of the received archive. A `Result<T, E>` return
/// with `E: Display` makes `T` the task's output and turns an `Err` into a task failure
/// carrying the message. Generic, `async`, `unsafe` and `extern` functions, methods and
/// destructuring patterns are rejected with a compile error.
///
/// Options: `crate = path` names the crate that provides `__private` (default `::procpool`).
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let options = match syn::parse::<Options>(attr) {
        Ok(options) => options,
        Err(error) => return error.to_compile_error().into(),
    };
    let function = match syn::parse::<ItemFn>(item) {
        Ok(function) => function,
        Err(error) => return error.to_compile_error().into(),
    };
    match expand(&options, function) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

/// The attribute's arguments.
struct Options {
    krate: Path,
}

impl Parse for Options {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut krate: Path = syn::parse_quote!(::procpool);
        while !input.is_empty() {
            let key: Ident = if input.peek(Token![crate]) {
                let token: Token![crate] = input.parse()?;
                Ident::new("crate", token.span)
            } else {
                input.parse()?
            };
            if key != "crate" {
                return Err(syn::Error::new(
                    key.span(),
                    "unknown option: `#[task]` accepts only `crate = path`",
                ));
            }
            input.parse::<Token![=]>()?;
            krate = input.parse()?;
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(Self { krate })
    }
}

/// How one parameter crosses the wire.
enum ParamKind {
    /// An owned value, deserialized from its archive.
    Owned(Type),
    /// `&str`: a `String` on the wire, borrowed as `&str`.
    Str,
    /// `&[T]`: a `Vec<T>` on the wire, borrowed (or converted) as `&[T]`.
    Slice(Type),
}

struct Param {
    name: Ident,
    kind: ParamKind,
    /// The type as written, for the inherent `call` function.
    ty: Type,
}

impl ParamKind {
    /// The owned type that travels.
    fn wire_type(&self) -> TokenStream2 {
        match self {
            ParamKind::Owned(ty) => quote!(#ty),
            ParamKind::Str => quote!(::std::string::String),
            ParamKind::Slice(elem) => quote!(::std::vec::Vec<#elem>),
        }
    }
}

fn expand(options: &Options, function: ItemFn) -> syn::Result<TokenStream2> {
    check_signature(&function)?;
    let krate = &options.krate;
    let private = quote!(#krate::__private);
    let sig = &function.sig;
    let name = &sig.ident;
    let name_str = name.to_string();
    let vis = &function.vis;

    let params = sig
        .inputs
        .iter()
        .map(parse_param)
        .collect::<syn::Result<Vec<_>>>()?;
    if params.len() > 12 {
        return Err(syn::Error::new(
            sig.inputs.span(),
            "a task takes at most 12 parameters; group them in a struct",
        ));
    }

    check_output(&sig.output)?;
    let (output_ty, returns_result) = output_type(&sig.output);
    let signature = normalized_signature(&params, &sig.output);

    let wire_types: Vec<TokenStream2> = params.iter().map(|p| p.kind.wire_type()).collect();
    let args_ty = match wire_types.len() {
        1 => wire_types[0].clone(),
        _ => quote!((#(#wire_types,)*)),
    };

    // Bind each archived parameter, then turn it into what the body expects.
    let archived_fields: Vec<TokenStream2> = match params.len() {
        0 => Vec::new(),
        1 => vec![quote!(__archived)],
        _ => (0..params.len())
            .map(|i| {
                let index = syn::Index::from(i);
                quote!(&__archived.#index)
            })
            .collect(),
    };
    let mut reads = Vec::new();
    let mut call_args = Vec::new();
    for (param, field) in params.iter().zip(&archived_fields) {
        let local = format_ident!("__arg_{}", param.name);
        let span = param.ty.span();
        match &param.kind {
            ParamKind::Owned(ty) => {
                reads.push(quote_spanned! {span=>
                    let #local: #ty = #private::deserialize_arg::<#ty>(#field, __pool)?;
                });
                call_args.push(quote!(#local));
            }
            ParamKind::Str => {
                reads.push(quote! { let #local: &str = #private::str_arg(#field); });
                call_args.push(quote!(#local));
            }
            ParamKind::Slice(elem) => {
                reads.push(quote_spanned! {span=>
                    let #local = #private::slice_arg::<#elem>(#field, __pool)?;
                });
                call_args.push(quote!(&*#local));
            }
        }
    }
    let unused_archived = if params.is_empty() {
        quote!(let _ = __archived; let _ = __pool;)
    } else {
        quote!()
    };
    let invoke_body = if returns_result {
        quote! {
            match Self::call(#(#call_args),*) {
                #private::Ok(__value) => #private::Ok(__value),
                #private::Err(__error) => #private::Err(#private::TaskFailure::new(
                    #private::FailureKind::Failed,
                    ::std::string::ToString::to_string(&__error),
                )),
            }
        }
    } else {
        quote!(#private::Ok(Self::call(#(#call_args),*)))
    };

    let docs: Vec<_> = function
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .collect();
    let cfgs: Vec<_> = function
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .collect();
    let other_attrs: Vec<_> = function
        .attrs
        .iter()
        .filter(|a| !a.path().is_ident("doc") && !a.path().is_ident("cfg"))
        .collect();
    let default_doc = if docs.is_empty() {
        let text = format!(" The `{name_str}` task.");
        quote!(#[doc = #text])
    } else {
        quote!()
    };
    let call_inputs = params.iter().map(|p| {
        let n = &p.name;
        let t = &p.ty;
        quote!(#n: #t)
    });
    let mut_bindings = sig.inputs.iter().filter_map(|arg| match arg {
        FnArg::Typed(pat) => match &*pat.pat {
            Pat::Ident(ident) if ident.mutability.is_some() => {
                let n = &ident.ident;
                Some(quote!(let mut #n = #n;))
            }
            _ => None,
        },
        FnArg::Receiver(_) => None,
    });
    let output = &sig.output;
    let body_stmts = &function.block.stmts;
    let const_token = &sig.constness;
    let linkme_path = quote!(#krate::__private::linkme);

    Ok(quote! {
        #(#cfgs)*
        #(#docs)*
        #default_doc
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #name;

        #(#cfgs)*
        impl #name {
            /// Calls the task's function directly, in this process.
            #(#other_attrs)*
            #[allow(clippy::too_many_arguments, unused_mut)]
            #vis #const_token fn call(#(#call_inputs),*) #output {
                #(#mut_bindings)*
                #(#body_stmts)*
            }
        }

        #(#cfgs)*
        impl #private::Task for #name {
            type Args = #args_ty;
            type Output = #output_ty;
            const ID: #private::TaskId =
                #private::task_id(::core::module_path!(), #name_str, #signature);
            const NAME: &'static str = ::core::concat!(::core::module_path!(), "::", #name_str);
            const SIGNATURE: &'static str = #signature;
        }

        #(#cfgs)*
        impl #private::Invoke for #name {
            #[inline]
            fn invoke(
                __archived: &<<Self as #private::Task>::Args as #private::rkyv::Archive>::Archived,
                __pool: &mut #private::rkyv::de::Pool,
            ) -> #private::Result<<Self as #private::Task>::Output, #private::TaskFailure> {
                #unused_archived
                #(#reads)*
                #invoke_body
            }
        }

        // In an anonymous const so two tasks never clash on the static's name.
        #(#cfgs)*
        const _: () = {
            #[#private::linkme::distributed_slice(#private::TASKS)]
            #[linkme(crate = #linkme_path)]
            static ENTRY: #private::TaskEntry = #private::TaskEntry::new::<#name>();
        };
    })
}

fn check_signature(function: &ItemFn) -> syn::Result<()> {
    let sig = &function.sig;
    if let Some(token) = &sig.asyncness {
        return Err(syn::Error::new(
            token.span,
            "a task cannot be `async`: workers run tasks synchronously; block inside the task instead",
        ));
    }
    if let Some(token) = &sig.unsafety {
        return Err(syn::Error::new(
            token.span,
            "a task cannot be `unsafe fn`: a pool calls it with no way to uphold its contract",
        ));
    }
    if let Some(abi) = &sig.abi {
        return Err(syn::Error::new(
            abi.span(),
            "a task cannot have an `extern` ABI",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a task cannot be generic: its id and argument types must be fixed at compile time; \
             write one task per concrete type",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(
            variadic.span(),
            "a task cannot be variadic",
        ));
    }
    Ok(())
}

fn parse_param(arg: &FnArg) -> syn::Result<Param> {
    let typed = match arg {
        FnArg::Receiver(receiver) => {
            return Err(syn::Error::new(
                receiver.span(),
                "a task cannot take `self`: it must be a free function",
            ));
        }
        FnArg::Typed(typed) => typed,
    };
    let name = match &*typed.pat {
        Pat::Ident(ident) if ident.by_ref.is_none() && ident.subpat.is_none() => {
            ident.ident.clone()
        }
        other => {
            return Err(syn::Error::new(
                other.span(),
                "task parameters must be plain identifiers (`x: T`); destructure inside the body",
            ));
        }
    };
    let ty = (*typed.ty).clone();
    let kind = classify(&ty)?;
    Ok(Param { name, kind, ty })
}

fn classify(ty: &Type) -> syn::Result<ParamKind> {
    match ty {
        Type::Reference(reference) => {
            if reference.mutability.is_some() {
                return Err(syn::Error::new(
                    ty.span(),
                    "a task cannot take `&mut`: arguments are read-only copies from another process",
                ));
            }
            if let Some(lifetime) = &reference.lifetime {
                return Err(syn::Error::new(
                    lifetime.span(),
                    "task parameters cannot name lifetimes; write `&str` or `&[T]`",
                ));
            }
            match &*reference.elem {
                Type::Path(path) if path.qself.is_none() && path.path.is_ident("str") => {
                    Ok(ParamKind::Str)
                }
                Type::Slice(slice) => {
                    check_owned(&slice.elem)?;
                    Ok(ParamKind::Slice((*slice.elem).clone()))
                }
                _ => Err(syn::Error::new(
                    ty.span(),
                    "the only borrowed task parameters are `&str` and `&[T]`; take other types by value",
                )),
            }
        }
        _ => {
            check_owned(ty)?;
            Ok(ParamKind::Owned(ty.clone()))
        }
    }
}

/// Rejects types that can never cross a process boundary, with a readable message; everything
/// else is left to the `Wire` bound (whose message names the missing rkyv derives).
fn check_owned(ty: &Type) -> syn::Result<()> {
    let message = match ty {
        Type::ImplTrait(_) => "a task parameter cannot be `impl Trait`: a task cannot be generic",
        Type::TraitObject(_) => "a task parameter cannot be a trait object",
        Type::BareFn(_) => {
            "a task parameter cannot be a function pointer: it means nothing in another process"
        }
        Type::Ptr(_) => {
            "a task parameter cannot be a raw pointer: it means nothing in another process"
        }
        Type::Reference(_) => "references are only supported at the top level, as `&str` or `&[T]`",
        Type::Infer(_) => "a task parameter needs a concrete type",
        Type::Never(_) => "a task parameter cannot be `!`",
        Type::Macro(_) => "a task parameter type cannot be a macro invocation",
        Type::Tuple(tuple) => {
            for elem in &tuple.elems {
                check_owned(elem)?;
            }
            return Ok(());
        }
        Type::Array(array) => return check_owned(&array.elem),
        Type::Paren(paren) => return check_owned(&paren.elem),
        Type::Group(group) => return check_owned(&group.elem),
        Type::Path(path) => {
            for segment in &path.path.segments {
                if let PathArguments::AngleBracketed(args) = &segment.arguments {
                    for arg in &args.args {
                        match arg {
                            GenericArgument::Type(inner) => check_owned(inner)?,
                            GenericArgument::Lifetime(lifetime) => {
                                return Err(syn::Error::new(
                                    lifetime.span(),
                                    "task argument types must own their data (no lifetimes)",
                                ));
                            }
                            _ => {}
                        }
                    }
                }
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    Err(syn::Error::new(ty.span(), message))
}

/// Rejects outputs that cannot leave the worker: the value (the `Ok` type of a `Result`) must
/// be an owned, concrete type.
fn check_output(output: &ReturnType) -> syn::Result<()> {
    let ReturnType::Type(_, ty) = output else {
        return Ok(());
    };
    let value = result_ok_type(ty).unwrap_or(ty);
    let message = match value {
        Type::Reference(_) => "a task must return an owned value, not a reference",
        Type::ImplTrait(_) => "a task cannot return `impl Trait`: name the concrete type",
        Type::Never(_) => "a task cannot return `!`; return `()` and exit or panic inside",
        _ => return check_owned(value),
    };
    Err(syn::Error::new(value.span(), message))
}

/// The task's output type, and whether the function returns a `Result` (then the output is its
/// `Ok` type).
fn output_type(output: &ReturnType) -> (TokenStream2, bool) {
    match output {
        ReturnType::Default => (quote!(()), false),
        ReturnType::Type(_, ty) => match result_ok_type(ty) {
            Some(ok) => (quote!(#ok), true),
            None => (quote!(#ty), false),
        },
    }
}

/// `T` when `ty` is `Result<T, E>` (or an alias spelled `Result<T>`).
fn result_ok_type(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    });
    let ok = types.next()?;
    (types.count() <= 1).then_some(ok)
}

/// `fn(u64, &str) -> Result<u64, String>`: token text with whitespace removed except between
/// two word characters, so formatting never changes a task's id.
fn normalized_signature(params: &[Param], output: &ReturnType) -> String {
    let mut text = String::from("fn(");
    for (i, param) in params.iter().enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        let ty = &param.ty;
        text.push_str(&compact(&quote!(#ty).to_string()));
    }
    text.push(')');
    if let ReturnType::Type(_, ty) = output {
        text.push_str(" -> ");
        text.push_str(&compact(&quote!(#ty).to_string()));
    }
    text
}

fn compact(tokens: &str) -> String {
    let chars: Vec<char> = tokens.chars().collect();
    let mut out = String::with_capacity(chars.len());
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let before = out.chars().last();
            let after = chars.get(i + 1).copied();
            match (before, after) {
                (Some(b), Some(a)) if is_word(b) && is_word(a) => out.push(' '),
                (Some(',' | ';'), Some(_)) => out.push(' '),
                _ => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}
