from django import forms


class NoteForm(forms.Form):
    recipient = forms.CharField(label="Thank", max_length=100, initial="Ada")
